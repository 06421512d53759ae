"""`compress run --target mobile` on a Fashion-MNIST subset: every .tflite checked against its torch model, benched
through runtime/ on LiteRT against the baseline's own FP32 .tflite, and a rerun served from the stage cache."""
from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from tests.conftest import needs_fashion_mnist, small_recipe

_MISSING = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
pytestmark = [
    needs_fashion_mnist,
    pytest.mark.tflite,
    pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed "
                       "(pip install 'edge-compress[tflite]': litert-torch==0.10.0, ai-edge-litert==2.3.0)"),
]


@pytest.fixture(scope="module")
def mobile_run(tmp_path_factory):
    from compress.pipeline import run

    recipe = small_recipe()
    recipe = dataclasses.replace(recipe, target=dataclasses.replace(recipe.target, name="mobile"))
    out = tmp_path_factory.mktemp("mobile-run")
    return run(recipe, out), out, recipe


def _rows(report):
    return {v["name"]: v for v in report["variants"]}


def test_every_variant_is_a_tflite_checked_against_torch(mobile_run):
    report, out, _ = mobile_run
    rows = _rows(report)
    student = report["student"]["chosen"]
    assert list(rows) == ["baseline", student, "int8", "compressed"]
    for name, row in rows.items():
        assert row["artifact"].startswith("target/mobile/") and row["artifact"].endswith(".tflite")
        assert (out / row["artifact"]).is_file()
    fp32 = {n: p for n, p in report["parity"].items() if rows[n]["precision"] == "fp32"}
    int8 = {n: p for n, p in report["parity"].items() if rows[n]["precision"] == "int8"}
    assert set(fp32) == {"baseline", student} and set(int8) == {"int8", "compressed"}
    for name, p in fp32.items():  # same function, another runtime: float rounding only
        assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0, name
    for name, p in int8.items():  # full integer vs the float torch model it came from
        assert p["top1_agreement"] >= 0.98 and p["sqnr_db"] >= 20, (name, p)


def test_shipped_tflite_is_full_integer_and_keeps_the_students_accuracy(mobile_run):
    report, _, _ = mobile_run
    ops = report["quantize"]["ops"]["compressed"]
    assert set(ops["by_precision"]) == {"int8"} and not ops["float_ops"], ops
    assert ops["inputs"][0]["dtype"] == "int8" and ops["inputs"][0]["shape"][0] == 1
    rows = _rows(report)
    student = rows[report["student"]["chosen"]]
    # test split (1,000 images), through runtime/ with inputs quantized by the artifact's own scale
    assert abs(student["accuracy"] - rows["compressed"]["accuracy"]) <= 0.02
    assert rows["baseline"]["accuracy"] >= 0.65
    assert rows["compressed"]["size_bytes"] * 6 < rows["baseline"]["size_bytes"]  # quarter width, int8 weights


def test_latency_is_timed_at_the_artifacts_fixed_batch(mobile_run):
    report, _, recipe = mobile_run
    assert recipe.bench.batch_sizes == (1, 8)
    for row in report["variants"]:
        assert list(row["latency_ms"]) == ["1"] and row["latency_ms"]["1"]["p50"] > 0
    assert report["comparison"]["baseline"] == "baseline" and set(report["comparison"]["speedup_p50"]) == {"1"}


def test_rerun_is_served_from_the_cache(mobile_run):
    from compress.pipeline import run

    first, out, recipe = mobile_run
    again = run(recipe, out)
    assert all(s["cached"] for s in again["stages"] if s["name"] != "bench")
    assert {s["name"] for s in again["stages"]} >= {"train", "prune", "distill", "compile", "bench"}
    assert [v["accuracy"] for v in again["variants"]] == [v["accuracy"] for v in first["variants"]]
