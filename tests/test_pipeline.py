"""The whole pipeline on a Fashion-MNIST subset: numbers, structure and the stage cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist, small_recipe

pytestmark = needs_fashion_mnist


def _variant(report, name):
    return next(v for v in report["variants"] if v["name"] == name)


def _stage(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


def test_baseline_learns_far_above_chance(small_run):
    report, _ = small_run
    # 10 classes: chance is 0.10; a 3k-image subset trained for 2 epochs reaches ~0.8.
    assert _variant(report, "baseline")["accuracy"] >= 0.65
    assert _stage(report, "train")["metrics"]["val_accuracy"] >= 0.65


def test_pruning_halves_channels_to_multiples_of_round_to(small_run):
    report, _ = small_run
    m = _stage(report, "prune")["metrics"]
    before, after = m["channels_before"], m["channels_after"]
    assert set(before) == set(after)
    for name, width in after.items():
        assert width % 4 == 0, f"{name}: {width} channels is not a multiple of round_to=4"
        assert width == before[name] // 2, f"{name}: {before[name]} -> {width}, expected half"
    assert m["params_after"] < 0.35 * m["params_before"]  # half the channels -> about a quarter of conv weights


def test_onnx_matches_torch(small_run):
    report, _ = small_run
    for name, parity in report["parity"].items():
        assert parity["max_abs_diff"] <= 1e-4, name
        assert parity["top1_agreement"] == 1.0, name
        assert 1 in parity["batch_sizes"] and 4 in parity["batch_sizes"]


def test_int8_graph_has_qdq_and_agrees_with_fp32(small_run):
    report, out = small_run
    q = report["quantize"]["compressed"]
    assert q["ops"]["qdq_nodes"]["QuantizeLinear"] > 0
    assert q["ops"]["qdq_nodes"]["DequantizeLinear"] > 0
    assert q["ops"]["int8"]["Conv"] >= 8  # every conv of the 4-stage net runs in INT8
    assert q["val_top1_agreement_vs_fp32"] >= 0.98
    # the same agreement holds on the test split, measured through runtime/ in the bench stage
    student = report["student"]["chosen"]
    assert student in ("pruned", "distilled") and q["source"] == student
    assert report["student"]["val_accuracy"][student] == max(report["student"]["val_accuracy"].values())
    source, int8 = _variant(report, student), _variant(report, f"{student}-int8")
    assert abs(source["accuracy"] - int8["accuracy"]) <= 0.02


def test_report_schema_and_comparison(small_run):
    report, out = small_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema_version"] == 1
    for key in ("recipe", "target", "dataset", "environment", "variants", "comparison"):
        assert key in on_disk
    assert {"cpu", "threads", "versions"} <= set(on_disk["environment"])
    names = [v["name"] for v in on_disk["variants"] if not v["name"].startswith("litert-")]  # ONNX Runtime's
    student = on_disk["student"]["chosen"]
    assert names == ["baseline", "pruned", "distilled", "int8", f"{student}-int8", "compressed"]
    base, comp = _variant(on_disk, "baseline"), _variant(on_disk, "compressed")
    for v in (base, comp):
        for b in ("1", "8"):
            lat = v["latency_ms"][b]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
            assert lat["p50_ci95"][0] <= lat["p50"] <= lat["p50_ci95"][1]
    c = on_disk["comparison"]
    assert c["accuracy_drop_pt"] == pytest.approx(100 * (base["accuracy"] - comp["accuracy"]))
    pairs = comp["discordant_vs_baseline"]  # the drop is decided on the rows only one of the two gets right
    assert pairs["rows"] == on_disk["dataset"]["samples"]
    assert 100 * (pairs["baseline_only"] - pairs["variant_only"]) / pairs["rows"] == pytest.approx(c["accuracy_drop_pt"])
    lo, hi = c["accuracy_drop_ci95_pt"]
    assert lo <= c["accuracy_drop_pt"] <= hi
    assert c["size_ratio"] == pytest.approx(base["size_bytes"] / comp["size_bytes"])
    assert base["size_bytes"] / _variant(on_disk, f"{student}-int8")["size_bytes"] > 4  # half the channels, 8 bits
    assert (out / "report.md").read_text().startswith("# Compression report")
    assert (out / "target" / "cpu" / "model.onnx").is_file()


def test_the_shipped_model_is_the_fastest_within_the_budget(small_run):
    """`compressed` is a copy of the candidate the budget chose, and target/cpu holds exactly that file."""
    import hashlib

    report, out = small_run
    budget, comp = report["budget"], _variant(report, "compressed")
    assert budget["max_accuracy_drop_pt"] == 5.0 and budget["judged_on"]["rows"] == 1500  # 1,000 test + 500 val
    chosen = _variant(report, budget["shipped"])
    assert comp["shipped_from"] == budget["shipped"]  # the baseline too, when the timings made it the fastest
    assert chosen["budget"]["meets"] and chosen["budget"]["drop_pt"] <= 5.0
    assert comp["accuracy"] == chosen["accuracy"] and comp["precision"] == chosen["precision"]
    for row in report["variants"]:
        held = row["heldout"]
        assert held["rows"] == 1500 and row["budget"]["meets"] == (row["budget"]["drop_pt"] <= 5.0)
        lo, hi = row["budget"]["drop_ci95_pt"]
        assert lo - 0.01 <= row["budget"]["drop_pt"] <= hi + 0.01
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(out / "target" / "cpu" / "model.onnx") == digest(out / chosen["artifact"])
    sidecar = json.loads((out / "target" / "cpu" / "model.onnx.meta.json").read_text())
    assert sidecar["parity_vs_source"]["logits"]["ok"] is True  # run on validation images against the source
    assert sidecar["parity_vs_source"]["logits"]["samples"] == 32
    assert "budget: at most 5 pt below the baseline" in (out / "report.md").read_text()


def test_rerun_reuses_every_stage(small_run):
    from compress.pipeline import run

    first, out = small_run
    second = run(small_recipe(), out)
    cached = {s["name"]: s["cached"] for s in second["stages"]}
    assert all(cached[name] for name in ("train", "prune", "distill", "export", "quantize"))
    # the shipped candidate is chosen on fresh timings; the same choice reuses the compiled artifact
    assert cached["compile"] or second["budget"]["shipped"] != first["budget"]["shipped"]
    assert candidate_accuracies(second) == candidate_accuracies(first)


def candidate_accuracies(report) -> dict[str, float]:
    return {v["name"]: v["accuracy"] for v in report["variants"] if v["name"] != "compressed"}


def test_shipped_artifact_runs_through_runtime_with_labels(small_run):
    import runtime
    from bench.data.idx import load_fashion_mnist_raw

    _, out = small_run
    raw = load_fashion_mnist_raw()
    with runtime.load(out / "target" / "cpu" / "model.onnx") as model:
        labels = model.predict(raw["test_images"][:200])
    truth = [model.metadata["labels"][i] for i in raw["test_labels"][:200]]
    assert np.mean([a == b for a, b in zip(labels, truth)]) >= 0.6


def test_jetson_target_writes_a_deploy_bundle_reusing_the_cached_stages(small_run):
    from compress.pipeline import run
    from compress.recipe import TargetConfig

    _, out = small_run
    report = run(small_recipe(target=TargetConfig(name="jetson")), out)
    cached = {s["name"]: s["cached"] for s in report["stages"]}
    assert cached["train"] and cached["distill"] and not cached["compile"]
    bundle = out / "target" / "jetson"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"model.onnx", "build_engine.sh", "manifest.json"} <= {p.name for p in bundle.iterdir()}
    assert manifest["preset"] and "trtexec" in (bundle / "build_engine.sh").read_text()
    assert report["target"] == "jetson" and _variant(report, "compressed")["accuracy"] >= 0.6
