"""The cpu target times LiteRT beside ONNX Runtime: which runtime may ship (`target.runtime`), the hint when the
other would be faster, and the one-line skip when LiteRT cannot be built here."""
from __future__ import annotations

import dataclasses
import shutil
import types

import pytest


def _row(name: str, runtime: str, p50: float, accuracy: float = 0.90, precision: str = "int8") -> dict:
    """A report row as the bench writes it; 1,000 held-out rows, discordant counts giving `accuracy` against a
    0.90 baseline."""
    diff = round((0.90 - accuracy) * 1000)
    return {"name": name, "runtime": runtime, "precision": precision, "description": name,
            "heldout": {"rows": 1000, "accuracy": accuracy,
                        "discordant_vs_baseline": {"baseline_only": max(diff, 0), "variant_only": max(-diff, 0),
                                                   "rows": 1000}},
            "latency_ms": {"1": {"p50": p50, "p50_ci95": [p50 * 0.99, p50 * 1.01]}}}


def _rows(litert_p50: float) -> list[dict]:
    return [_row("baseline", "onnxruntime", 1.0, precision="fp32"), _row("distilled-int8", "onnxruntime", 0.20, 0.897),
            _row("litert-baseline", "litert", 1.1, precision="fp32"),
            _row("litert-distilled-int8", "litert", litert_p50, 0.896)]


def _budget(tmp_path, runtime: str, litert_p50: float) -> tuple[dict, list[str]]:
    from compress.recipe import Recipe, TargetConfig
    from compress.shipping.budget import apply_budget

    recipe = Recipe(target=TargetConfig(runtime=runtime))
    shipped = []

    def ship(name: str, batch: str):
        shipped.append((name, batch))
        path = tmp_path / "target" / "cpu" / f"model.{'tflite' if name.startswith('litert-') else 'onnx'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"model")
        return path

    info = apply_budget(recipe, _rows(litert_p50), ship, tmp_path)
    return info, shipped


def test_onnxruntime_ships_its_own_and_says_when_litert_would_be_faster(tmp_path):
    info, shipped = _budget(tmp_path, "onnxruntime", litert_p50=0.05)
    assert shipped == [("distilled-int8", "1")]
    hint = info["other_runtime"]
    assert hint["variant"] == "litert-distilled-int8" and hint["speedup_vs_shipped"] == pytest.approx(4.0)
    assert "litert would run 4.00x faster at batch 1" in hint["hint"] and "--runtime litert" in hint["hint"]


def test_auto_ships_the_fastest_whichever_runtime_and_replaces_the_other_runtimes_model(tmp_path):
    (tmp_path / "target" / "cpu").mkdir(parents=True)
    (tmp_path / "target" / "cpu" / "model.onnx").write_bytes(b"an earlier run's model")
    info, shipped = _budget(tmp_path, "auto", litert_p50=0.05)
    assert shipped == [("litert-distilled-int8", "1")] and "other_runtime" not in info
    assert sorted(p.name for p in (tmp_path / "target" / "cpu").iterdir()) == ["model.tflite"]


def test_litert_ships_only_litert_rows(tmp_path):
    info, shipped = _budget(tmp_path, "litert", litert_p50=0.5)  # slower than ONNX Runtime's INT8, still ships
    assert shipped == [("litert-distilled-int8", "1")]
    assert info["other_runtime"]["runtime"] == "onnxruntime"  # and the summary says ONNX Runtime is faster


def test_no_hint_when_litert_is_slower(tmp_path):
    info, shipped = _budget(tmp_path, "onnxruntime", litert_p50=0.5)
    assert shipped == [("distilled-int8", "1")] and "other_runtime" not in info


def _fake_run(runtime: str):
    from compress.families.image.family import IMAGE
    from compress.recipe import Recipe, TargetConfig
    from targets import get_target

    return types.SimpleNamespace(recipe=Recipe(target=TargetConfig(runtime=runtime)), target=get_target("cpu"),
                                 family=IMAGE)


def test_without_litert_the_cpu_target_says_so_in_one_line(monkeypatch, capsys):
    from compress.pipeline import require_runtime
    from compress.stages import litert
    from common.errors import CompressError
    from targets import get_target

    monkeypatch.setattr(get_target("mobile"), "available", lambda: (False, "litert-torch is not installed"))
    run = _fake_run("onnxruntime")
    assert litert.enabled(run) is False
    assert capsys.readouterr().err.strip() == "[litert] LiteRT candidates skipped: litert-torch is not installed"
    require_runtime(run.recipe, run.target, run.family)  # onnxruntime and auto go on without LiteRT
    with pytest.raises(CompressError, match="^target.runtime litert cannot be built here: litert-torch is not"):
        require_runtime(_fake_run("litert").recipe, run.target, run.family)


def test_litert_candidates_can_be_turned_off(capsys):
    from compress.stages import litert

    run = _fake_run("onnxruntime")
    run.recipe = run.recipe.replace(target=dataclasses.replace(run.recipe.target, litert_candidates=False))
    assert litert.enabled(run) is False
    assert "target.litert_candidates is false" in capsys.readouterr().err


def test_the_other_targets_time_no_second_runtime():
    from compress.stages import litert
    from targets import get_target

    run = _fake_run("auto")
    run.target = get_target("mobile")
    assert litert.enabled(run) is False


def test_a_cpu_run_times_litert_beside_onnxruntime_and_auto_ships_the_faster(small_run, tmp_path):
    """The shared small run's directory, rerun with target.runtime auto: training, export and INT8 come from the cache;
    LiteRT's files are converted at both bench batch sizes and benched in the same run."""
    from targets import get_target

    ok, why = get_target("mobile").available()
    if not ok:
        pytest.skip(f"LiteRT cannot be built here: {why}")
    from compress.pipeline import run
    from runtime import load, sidecar_path
    from tests.conftest import small_recipe

    _, out = small_run
    shutil.copytree(out, tmp_path / "out")
    recipe = small_recipe()
    recipe = recipe.replace(target=dataclasses.replace(recipe.target, runtime="auto", litert_candidates=True))
    report = run(recipe, tmp_path / "out")
    rows = {r["name"]: r for r in report["variants"]}
    litert_rows = [r for r in rows.values() if r["name"].startswith("litert-")]
    assert {r["runtime"] for r in litert_rows} == {"litert"} and rows["baseline"]["runtime"] == "onnxruntime"
    assert {r["precision"] for r in litert_rows} == {"fp32", "int8", "dynamic-int8"}
    for r in litert_rows:  # timed at both batch sizes, from files converted at each
        assert set(r["latency_ms"]) == {"1", "8"}, r["name"]
        assert abs(r["accuracy"] - rows["baseline"]["accuracy"]) <= 0.06, r["name"]
    # LiteRT's FP32 baseline computes what ONNX Runtime's does
    assert rows["litert-baseline"]["top1_agreement_vs_baseline"] >= 0.99
    shipped = rows["compressed"]
    batch = str(report["budget"]["latency_batch"])
    fastest = min((r for r in rows.values() if r["budget"]["meets"] and r["name"] != "compressed"),
                  key=lambda r: r["latency_ms"][batch]["p50"])
    assert shipped["runtime"] in ("onnxruntime", "litert")
    assert shipped["latency_ms"][batch]["p50"] <= fastest["latency_ms"][batch]["p50"] * 3  # the tie rule's slack
    artifact = tmp_path / "out" / shipped["artifact"]
    assert artifact.suffix == (".tflite" if shipped["runtime"] == "litert" else ".onnx")
    assert [p.name for p in artifact.parent.glob("model.*") if not p.name.startswith(artifact.name)] == []
    with load(artifact) as runner:
        assert runner.backend == ("tflite" if shipped["runtime"] == "litert" else "onnxruntime")
    assert sidecar_path(artifact).is_file()
