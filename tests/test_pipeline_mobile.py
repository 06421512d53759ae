"""`compress run --target mobile`: a CNN on a Fashion-MNIST subset and a tiny BERT on a toy text set. Every .tflite
is checked against its torch model, benched through runtime/ on LiteRT against the baseline's own FP32 .tflite,
and a rerun is served from the stage cache."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist, small_recipe
from tests.test_pipeline import candidate_accuracies

_MISSING = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed "
                       "(pip install 'edge-compress[tflite]': litert-torch==0.10.0, ai-edge-litert==2.3.0)"),
]


@pytest.fixture(scope="module")
def mobile_run(tmp_path_factory):
    from bench.data.idx import FASHION_MNIST_DIR
    from compress.pipeline import run

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(needs_fashion_mnist.kwargs["reason"])
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
    assert list(rows) == ["baseline", student, "int8", f"{student}-int8", "compressed"]
    for name, row in rows.items():
        assert row["artifact"].startswith("target/mobile/") and row["artifact"].endswith(".tflite")
        assert (out / row["artifact"]).is_file()
    assert rows["compressed"]["artifact"] == "target/mobile/model.tflite"  # a copy of the candidate that ships
    assert (out / "target/mobile/model.tflite").read_bytes() == \
        (out / rows[report["budget"]["shipped"]]["artifact"]).read_bytes()
    parity = dict(report["parity"])
    assert parity.pop("compressed") == parity[report["budget"]["shipped"]]  # the shipped file's, under its old key
    fp32 = {n: p for n, p in parity.items() if rows[n]["precision"] == "fp32"}
    int8 = {n: p for n, p in parity.items() if rows[n]["precision"] == "int8"}
    assert set(fp32) == {"baseline", student} and set(int8) == {"int8", f"{student}-int8"}
    for name, p in fp32.items():  # same function, another runtime: float rounding only
        assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0, name
    for name, p in int8.items():  # full integer vs the float torch model it came from
        assert p["top1_agreement"] >= 0.98 and p["sqnr_db"] >= 20, (name, p)


def test_shipped_tflite_is_full_integer_and_keeps_the_students_accuracy(mobile_run):
    report, _, _ = mobile_run
    ops = report["quantize"]["compressed"]["ops"]
    assert set(ops["by_precision"]) == {"int8"} and not ops["float_ops"], ops
    assert ops["inputs"][0]["dtype"] == "int8" and ops["inputs"][0]["shape"][0] == 1
    rows = _rows(report)
    student, student_int8 = rows[report["student"]["chosen"]], rows[report["student"]["chosen"] + "-int8"]
    # test split (1,000 images), through runtime/ with inputs quantized by the artifact's own scale
    assert abs(student["accuracy"] - student_int8["accuracy"]) <= 0.02
    assert rows["baseline"]["accuracy"] >= 0.65
    assert student_int8["size_bytes"] * 6 < rows["baseline"]["size_bytes"]  # quarter width, int8 weights
    shipped = rows[report["budget"]["shipped"]]  # the mobile INT8 file is held to the baseline too
    assert shipped["budget"]["meets"] and shipped["budget"]["drop_pt"] <= report["budget"]["max_accuracy_drop_pt"]


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
    assert all(s["cached"] for s in again["stages"] if s["name"] not in ("bench", "ship"))
    assert {s["name"] for s in again["stages"]} >= {"train", "prune", "distill", "compile", "bench", "ship"}
    assert candidate_accuracies(again) == candidate_accuracies(first)


@pytest.fixture(scope="module")
def text_mobile_run(tmp_path_factory):
    from compress.pipeline import run
    from tests.test_text_pipeline import _recipe

    tmp = tmp_path_factory.mktemp("text-mobile")
    recipe = _recipe(tmp, target={"name": "mobile"})
    return run(recipe, tmp / "out"), tmp / "out", recipe


def test_transformer_becomes_fp32_and_dynamic_int8_tflite(text_mobile_run):
    report, out, _ = text_mobile_run
    rows = _rows(report)
    student = report["student"]["chosen"]
    assert list(rows) == ["baseline", student, "int8", f"{student}-int8", "compressed"]
    assert rows[f"{student}-int8"]["precision"] == "dynamic-int8"
    for name, p in report["parity"].items():
        if rows[name]["precision"] == "fp32":
            assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0, (name, p)
        else:  # int8 weights, activations quantized on the fly
            assert p["top1_agreement"] >= 0.98 and p["sqnr_db"] >= 20, (name, p)
    ops = report["quantize"]["compressed"]["ops"]
    assert ops["inputs"][0]["shape"] == [1, 32] and ops["inputs"][0]["dtype"] == "int32"
    assert "EMBEDDING_LOOKUP" in ops["ops"] and ops["hybrid_ops"].get("FULLY_CONNECTED", 0) > 0, ops
    assert rows["baseline"]["accuracy"] >= 0.9  # separable toy set, 200 test rows
    assert rows[f"{student}-int8"]["accuracy"] >= rows["baseline"]["accuracy"] - 0.05
    assert list(rows["compressed"]["latency_ms"]) == ["1"]
    assert (out / "target/mobile/tokenizer.json").is_file()


def test_runtime_predicts_texts_with_the_shipped_tflite(text_mobile_run):
    import runtime
    from tests.test_transformer import _texts

    report, out, _ = text_mobile_run
    texts = _texts(40, 1)
    with runtime.load(out / _rows(report)["compressed"]["artifact"]) as runner:
        labels = runner.predict_texts(list(texts.texts))  # 40 texts through a batch-1, length-32 artifact
    truth = ["pos" if y else "neg" for y in texts.y]
    assert len(labels) == 40 and np.mean([a == b for a, b in zip(labels, truth)]) >= 0.85
