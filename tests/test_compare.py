"""common.compare: the one comparator every parity and INT8 check uses, on hand-computed examples."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from common.compare import (REL_EPS, Bars, Comparison, compare, max_abs_diff, max_rel_diff, sqnr_db,
                            top1_agreement)


def test_max_abs_diff():
    # |[1, 2, 3] - [1, 2.5, 2]| = [0, 0.5, 1] -> 1
    assert max_abs_diff([1.0, 2.0, 3.0], [1.0, 2.5, 2.0]) == 1.0
    assert max_abs_diff([1.0, 2.5, 2.0], [1.0, 2.0, 3.0]) == 1.0  # symmetric
    # int8 outputs are differenced as float64: no wrap-around at 127 - (-128)
    assert max_abs_diff(np.array([127], np.int8), np.array([-128], np.int8)) == 255.0


def test_max_rel_diff_is_against_the_reference_with_a_stated_floor():
    assert REL_EPS == 1e-6
    # |[1.1, -2, 3] - [1, -2, 4]| / [1, 2, 4] = [0.1, 0, 0.25] -> 0.25
    assert max_rel_diff([1.0, -2.0, 4.0], [1.1, -2.0, 3.0]) == pytest.approx(0.25)
    # a zero reference: 1e-7 / max(0, 1e-6) = 0.1
    assert max_rel_diff([0.0, 1.0], [1e-7, 1.0]) == pytest.approx(0.1)
    assert max_rel_diff([0.0, 1.0], [1e-7, 1.0], eps=1e-3) == pytest.approx(1e-4)


def test_top1_agreement_on_logits_and_labels():
    a = np.array([[0, 1], [1, 0], [2, 3], [5, 4]], np.float32)  # classes 1, 0, 1, 0
    b = np.array([[0, 1], [0, 1], [3, 2], [5, 4]], np.float32)  # classes 1, 1, 0, 0
    assert top1_agreement(a, b) == 0.5
    assert top1_agreement([0, 1, 2, 3], [0, 1, 2, 0]) == 0.75
    assert top1_agreement(a, np.array([1, 0, 1, 1])) == 0.75  # logits against labels
    with pytest.raises(ValueError, match="cannot compare 3 rows with 4"):
        top1_agreement(a, b[:3])
    with pytest.raises(ValueError, match="no rows"):
        top1_agreement(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="labels .N. or logits"):
        top1_agreement(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))


def test_sqnr_db():
    ref = np.array([3.0, 4.0])  # ||ref|| = 5
    # noise [0.03, 0.04]: ||noise|| = 0.05 -> 20 log10(5 / 0.05) = 20 log10(100) = 40 dB
    assert sqnr_db(ref, ref + np.array([0.03, 0.04])) == pytest.approx(40.0)
    # noise [0.3, 0.4]: ||noise|| = 0.5 -> 20 dB
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(2), np.ones(2)) == -math.inf
    assert math.isnan(sqnr_db(ref, np.array([3.0, np.nan])))


def test_shapes_must_match_and_not_be_empty():
    with pytest.raises(ValueError, match=r"cannot compare shapes \[2, 3\] \(test\) and \[2, 2\]"):
        compare(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        compare(np.zeros((0, 2)), np.zeros((0, 2)))


def test_compare_without_bars_reports_every_metric_and_passes():
    ref = np.array([[3.0, 4.0], [1.0, -2.0]])
    got = np.array([[3.0, 4.0], [1.5, -2.0]])
    c = compare(ref, got)
    assert isinstance(c, Comparison)
    assert c.ok and c.why == "" and c.bars == Bars()
    assert c.max_abs_diff == 0.5 and c.max_rel_diff == 0.5 and c.top1_agreement == 1.0 and c.samples == 2
    # ||ref|| = sqrt(9 + 16 + 1 + 4) = sqrt(30), ||noise|| = 0.5
    assert c.sqnr_db == pytest.approx(20 * math.log10(math.sqrt(30) / 0.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.ok = False  # type: ignore[misc]


def test_identical_outputs_pass_every_bar_with_infinite_sqnr():
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    c = compare(x, x.copy(), Bars(atol=0.0, rtol=0.0, min_agreement=1.0, min_sqnr_db=1e9))
    assert c.ok and c.sqnr_db == math.inf and c.max_abs_diff == 0.0


# ref [[3, 4], [2, 1]] vs got [[3, 4.5], [1, 2]]: |diff| [[0, 0.5], [1, 1]] -> max abs 1; relative
# [[0, 0.125], [0.5, 1]] -> max rel 1; classes (1, 0) vs (1, 1) -> agreement 0.5; ||ref|| = sqrt(30),
# ||noise|| = sqrt(0.25 + 1 + 1) = 1.5 -> SQNR 20 log10(sqrt(30) / 1.5) = 11.25 dB
@pytest.mark.parametrize("bars, why", [
    (Bars(atol=0.1), "max_abs_diff 1 > atol 0.1 (over by 0.9)"),
    (Bars(rtol=0.1), "max_rel_diff 1 > rtol 0.1 (over by 0.9)"),
    (Bars(min_agreement=0.9), "top1_agreement 0.5000 < min_agreement 0.9 (short by 0.4000)"),
    (Bars(min_sqnr_db=20.0), "sqnr_db 11.25 < min_sqnr_db 20 (short by 8.75 dB)"),
])
def test_each_failing_bar_gives_not_ok_and_names_itself(bars, why):
    c = compare(np.array([[3.0, 4.0], [2.0, 1.0]]), np.array([[3.0, 4.5], [1.0, 2.0]]), bars)
    assert (c.max_abs_diff, c.max_rel_diff, c.top1_agreement) == (1.0, 1.0, 0.5)
    assert c.sqnr_db == pytest.approx(20 * math.log10(math.sqrt(30) / 1.5))
    assert not c.ok and c.why == why and c.bars is bars
    assert c.to_dict()["why"] == why and c.to_dict()["ok"] is False


def test_sqnr_bar_says_how_far_short():
    ref = np.array([3.0, 4.0])
    c = compare(ref[None], (ref * 1.1)[None], Bars(min_sqnr_db=30.0))  # 20 dB, 10 dB short
    assert not c.ok and c.why == "sqnr_db 20.00 < min_sqnr_db 30 (short by 10.00 dB)"


def test_several_misses_are_all_named_on_one_line():
    c = compare(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), Bars(atol=0.5, min_agreement=1.0))
    assert not c.ok and "\n" not in c.why
    assert c.why.startswith("max_abs_diff 1 > atol 0.5") and "; top1_agreement 0.0000 < min_agreement 1" in c.why


def test_passing_bars_are_ok():
    c = compare(np.array([[0.0, 1.0]]), np.array([[0.05, 1.0]]), Bars(atol=0.1, min_agreement=1.0))
    assert c.ok and c.why == "" and "why" not in c.to_dict()


def test_nan_never_meets_a_bar():
    ref = np.array([[0.0, 1.0]])
    c = compare(ref, np.array([[np.nan, 1.0]]), Bars(atol=1.0))
    assert not c.ok and "max_abs_diff nan > atol 1" in c.why
    assert not compare(ref, np.array([[np.nan, 1.0]]), Bars(min_sqnr_db=0.0)).ok


def test_float32_round_trip_at_ulp_level_passes_atol_1e6():
    rng = np.random.default_rng(0)
    x = rng.uniform(-4.0, 4.0, (64, 10))
    assert compare(x, x.astype(np.float32), Bars(atol=1e-6)).ok  # float64 -> float32: half an ulp
    x32 = x.astype(np.float32)
    one_ulp = np.nextafter(x32, np.float32(np.inf))
    c = compare(x32, one_ulp, Bars(atol=1e-6, min_agreement=1.0))
    assert c.ok, c.why
    assert 0 < c.max_abs_diff <= 4.8e-7  # an ulp below 4 is 2^-22


def test_to_dict_keeps_the_report_keys_and_is_strict_json():
    ref = np.array([[3.0, 4.0], [1.0, -2.0]], np.float32)
    c = compare(ref, ref.copy(), Bars(atol=1e-4), batch_sizes=(1, 4, 64), seq_lengths=(8, 32))
    d = c.to_dict()
    # what report.json's parity section and the mobile sidecar already held
    assert d["max_abs_diff"] == 0.0 and d["top1_agreement"] == 1.0 and d["samples"] == 2
    assert d["batch_sizes"] == [1, 4, 64] and d["seq_lengths"] == [8, 32]
    # added: the relative diff, SQNR (null = identical: JSON has no infinity), ok and the bars
    assert d["max_rel_diff"] == 0.0 and d["sqnr_db"] is None and d["ok"] is True and d["bars"] == {"atol": 1e-4}
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    d = compare(ref, ref * 1.1).to_dict()
    assert d["sqnr_db"] == pytest.approx(20.0, abs=1e-4) and d["bars"] == {}


def test_common_compare_imports_only_numpy():
    code = ("import sys, common.compare; mods = set(sys.modules); "
            "print(' '.join(sorted(m for m in mods if m.split('.')[0] in "
            "('torch', 'onnxruntime', 'compress', 'targets', 'bench', 'models', 'runtime'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_gpu_gate_holds_the_engine_to_the_comparators_bars(tmp_path):
    """targets.gpu's gate on a TensorRT / CUDA artifact (otherwise only reached with a GPU): default bars are
    top-1 agreement >= 0.97 and no max abs diff bar; a miss removes the artifact and keeps today's message."""
    from targets import TargetError, TargetSpec, gpu
    from targets import tensorrt as trt_build

    opts = gpu._options(TargetSpec("gpu"))
    assert gpu._bars(opts) == Bars(atol=None, min_agreement=0.97)
    expected = np.tile(np.array([[0.0, 1.0]], np.float32), (100, 1))
    got = expected + 0.5 * np.array([1.0, 0.0], np.float32)  # still class 1 everywhere, max abs diff 0.5
    ok = trt_build.compare(got.astype(np.float16), expected, gpu._bars(opts))
    assert ok.ok and ok.max_abs_diff == 0.5 and ok.to_dict()["samples"] == 100
    path = tmp_path / "model.engine"
    path.write_bytes(b"x")
    gpu._gate(ok, opts, path)
    assert path.exists()
    got[:4] = [1.0, 0.0]  # 4 rows flip: agreement 0.96
    miss = trt_build.compare(got, expected, gpu._bars(opts))
    with pytest.raises(TargetError, match=r"model.engine differs from ONNX Runtime CPU on the same graph: top-1 "
                                          r"agreement 0.9600 \(need >= 0.97\), max abs diff 1 on 100 samples"):
        gpu._gate(miss, opts, path)
    assert not path.exists()
