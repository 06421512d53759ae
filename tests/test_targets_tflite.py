"""The mobile target: litert-torch conversion (fp32 / fp16 / dynamic-range / full INT8), parity with torch
measured through the LiteRT interpreter, the op list, and the target's compile entry.

Behind the `tflite` marker; skipped with the reason when litert-torch or ai-edge-litert is missing.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from targets import TargetError, TargetSpec, get_target

_MISSING = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed "
                       "(pip install 'edge-compress[tflite]': litert-torch==0.10.0, ai-edge-litert==2.3.0)"),
]
CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 classes of 1 x 12 x 12 images: a bright 4x4 blob top-left, top-right or bottom, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 1, 12, 12)).astype(np.float32)
    corners = {0: (1, 1), 1: (1, 7), 2: (7, 4)}
    for i, c in enumerate(y):
        r, col = corners[int(c)]
        x[i, 0, r : r + 4, col : col + 4] += 2.0
    return x, y


@pytest.fixture(scope="module")
def tiny():
    """A tiny ResNet-style CNN trained for a few seconds, so that its logits mean something."""
    import torch

    from models import build_model

    torch.manual_seed(0)
    model = build_model("resnet-cnn", (1, 12, 12), 3, width=8, stages=2)
    x, y = _blobs(512, 0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for step in range(60):
        i = (step * 64) % 512
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
        opt.step()
    model.eval()
    test_x, test_y = _blobs(200, 1)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())
    assert acc >= 0.95, f"the tiny model did not learn the blobs (accuracy {acc})"
    return model, x[:128], test_x


def test_fp32_parity_and_ops(tiny, tmp_path):
    from targets import tflite, tflite_convert

    model, calib, test_x = tiny
    path = tflite_convert.convert_fp32(model, test_x[:1], tmp_path / "m.tflite")
    parity = tflite.check_parity(model, path, test_x)
    assert parity.samples == 200
    assert parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0
    ops = tflite.op_summary(path)
    assert ops["inputs"] == [{"name": ops["inputs"][0]["name"], "shape": [1, 1, 12, 12], "dtype": "float32",
                              "quantization": None}]  # NCHW as in torch: litert-torch handles the layout
    # stem + 2 convs per block + a 1x1 projection in the second stage = 6 convolutions; 2 residual adds; 1 FC
    assert sum(ops["ops"].get(op, 0) for op in CONV_OPS) == 6
    assert ops["ops"]["ADD"] == 2 and ops["ops"]["FULLY_CONNECTED"] == 1
    assert ops["by_precision"] == {"float": sum(ops["ops"].values())}


def test_full_int8_parity_and_ops(tiny, tmp_path):
    from targets import tflite, tflite_convert

    model, calib, test_x = tiny
    path = tflite_convert.convert_int8(model, test_x[:1], calib, tmp_path / "m.int8.tflite")
    parity = tflite.check_parity(model, path, test_x)
    assert parity.top1_agreement >= 0.98, parity
    assert parity.sqnr_db > 20, parity  # torchao's bar for INT8
    ops = tflite.op_summary(path)
    assert ops["float_ops"] == {} and ops["hybrid_ops"] == {}  # full integer: nothing stayed float
    assert sum(ops["ops"].get(op, 0) for op in CONV_OPS) == 6 and ops["ops"]["FULLY_CONNECTED"] == 1
    (inp,), (out,) = ops["inputs"], ops["outputs"]
    assert inp["dtype"] == "int8" and inp["shape"] == [1, 1, 12, 12] and inp["quantization"][0] > 0
    assert out["dtype"] == "int8" and out["quantization"][0] > 0


def test_fp16_and_dynamic_range(tiny, tmp_path):
    from targets import tflite, tflite_convert

    model, calib, test_x = tiny
    fp32 = tflite_convert.convert_fp32(model, test_x[:1], tmp_path / "fp32.tflite")
    fp16 = tflite_convert.convert_fp16(model, test_x[:1], tmp_path / "fp16.tflite")
    dyn = tflite_convert.convert_dynamic_int8(model, test_x[:1], tmp_path / "dyn.tflite")
    assert fp16.stat().st_size < 0.8 * fp32.stat().st_size  # tiny model: the graph is a large part
    p16 = tflite.check_parity(model, fp16, test_x)
    assert p16.max_abs_diff <= 5e-2 and p16.top1_agreement >= 0.99, p16
    ops16 = tflite.op_summary(fp16)
    assert ops16["ops"]["DEQUANTIZE"] >= 7  # float16 weights dequantized at load, compute in float32
    pdyn = tflite.check_parity(model, dyn, test_x)
    assert pdyn.top1_agreement >= 0.98, pdyn
    opsd = tflite.op_summary(dyn)
    assert opsd["inputs"][0]["dtype"] == "float32"
    assert set(opsd["hybrid_ops"]) <= CONV_OPS | {"FULLY_CONNECTED"} and opsd["hybrid_ops"]  # int8 weights
    assert "ADD" in opsd["float_ops"]  # what stayed float is named


def test_compile_module_writes_artifact_and_sidecar(tiny, tmp_path):
    import runtime

    model, calib, test_x = tiny
    target = get_target("mobile")
    assert target.SOURCE == "torch" and target.available()[0]
    meta = {"labels": ["tl", "tr", "bottom"], "preprocess": {"scale": 1.0, "mean": 0.0, "std": 1.0, "layout": "NCHW"}}
    art = target.compile_module(model, TargetSpec("mobile", threads=1), tmp_path, meta, calib=calib, check=test_x)
    assert art.path == tmp_path / "model.tflite" and art.runtime == "litert"
    side = json.loads(runtime.sidecar_path(art.path).read_text())
    assert side["precision"] == "int8" and side["ops"]["float_ops"] == {}
    assert side["parity_vs_torch"]["top1_agreement"] >= 0.98 and side["parity_vs_torch"]["samples"] == 200
    with runtime.load(art.path) as r:  # the torch-free runtime quantizes raw inputs with the stored scale
        assert r.predict(test_x[:1, 0]) in (["tl"], ["tr"], ["bottom"])


def test_check_parity_on_zero_rows_is_skipped_with_its_reason(tiny, tmp_path):
    from targets import tflite, tflite_convert

    model, _, test_x = tiny
    path = tflite_convert.convert_fp32(model, test_x[:1], tmp_path / "m.tflite")
    parity = tflite.check_parity(model, path, test_x[:0])  # was: ValueError: need at least one array to concatenate
    assert parity.ok and parity.samples == 0
    recorded = parity.to_dict()
    assert recorded["skipped"] == "parity not checked: no input rows to compare on"
    assert recorded["max_abs_diff"] is None and recorded["top1_agreement"] is None and recorded["ok"] is True


def test_compile_module_checks_on_the_rows_there_are(tiny, tmp_path):
    """`check` without rows: parity on the calibration samples (real inputs); fewer rows than the fixed batch: on
    those rows; check_samples 0: nothing to compare on, and the sidecar says parity was skipped."""
    model, calib, test_x = tiny
    target = get_target("mobile")
    spec = TargetSpec("mobile", threads=1, options={"precision": "fp32", "batch": 4})
    art = target.compile_module(model, spec, tmp_path / "empty", {}, calib=calib, check=test_x[:0])
    assert art.metadata["parity_vs_torch"]["samples"] == len(calib)
    art = target.compile_module(model, spec, tmp_path / "short", {}, calib=calib, check=test_x[:3])
    assert art.metadata["parity_vs_torch"]["samples"] == 3 and art.metadata["parity_vs_torch"]["ok"]
    spec = TargetSpec("mobile", threads=1, options={"precision": "fp32", "check_samples": 0})
    art = target.compile_module(model, spec, tmp_path / "none", {}, calib=calib, check=test_x)
    assert art.path.is_file()
    side = json.loads((tmp_path / "none" / "model.tflite.meta.json").read_text())
    assert side["parity_vs_torch"]["skipped"] == "parity not checked: no input rows to compare on"
    assert side["parity_vs_torch"]["samples"] == 0


@pytest.mark.parametrize("options, match", [
    ({"precision": "int4"}, r"mobile precision 'int4' unknown; known: fp32, fp16, dynamic-int8, int8"),
    ({"threads": 2}, r"unknown option\(s\) \['threads'\]; known: precision, "),
    ({"precision": "fp32", "min_agreement": 1.01}, r"fp32 .tflite differs from torch: top-1 agreement 1.0000 "
                                                   r"\(need >= 1.01\)"),
])
def test_compile_module_bad_options_and_gate(tiny, tmp_path, options, match):
    model, calib, test_x = tiny
    with pytest.raises(TargetError, match=match):
        get_target("mobile").compile_module(model, TargetSpec("mobile", options=options), tmp_path, {},
                                            calib=calib, check=test_x[:20])
    assert not (tmp_path / "model.tflite").exists()  # nothing past the gate is left behind


def test_onnx_entry_point_explains_the_torch_source(tmp_path):
    with pytest.raises(TargetError, match=r"converts from the torch model \(litert-torch\), not from ONNX"):
        get_target("mobile").compile(tmp_path / "m.onnx", TargetSpec("mobile"), tmp_path, {})
