"""`compress run` on a Transformer recipe: a tiny random BERT on a separable toy sentiment CSV goes through
fine-tune -> shrink -> distill -> export -> dynamic INT8 search -> cpu target -> bench, with numeric checks."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.test_pipeline import candidate_accuracies
from tests.test_transformer import _texts

pytest.importorskip("tokenizers", reason="tokenizers not installed (a core dependency: pip install -e .)")


def _write_csv(path, split) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "sentiment"])
        for text, y in zip(split.texts, split.y):
            writer.writerow([text, "pos" if y else "neg"])


def _recipe(tmp_path, **overrides):
    from compress.recipe import recipe_from_dict

    _write_csv(tmp_path / "train.csv", _texts(600, 0))
    _write_csv(tmp_path / "test.csv", _texts(200, 1))
    spec = {
        "name": "toy-text",
        "data": {"dataset": "csv", "path": str(tmp_path / "train.csv"), "test_path": str(tmp_path / "test.csv"),
                 "text_column": "text", "label_column": "sentiment", "max_length": 32, "val_size": 100},
        "model": {"arch": "bert", "pretrained": False, "hidden": 32, "layers": 2, "heads": 4, "ffn": 64},
        "train": {"epochs": 8, "batch_size": 32, "lr": 0.003, "optimizer": "adamw"},
        "prune": {"layers": 1, "heads_ratio": 0.5, "ratio": 0.5, "round_to": 16, "vocab": True,
                  "finetune_epochs": 4, "lr": 0.003},
        "distill": {"epochs": 4, "lr": 0.003, "temperature": 2.0, "alpha": 0.5},
        "quantize": {"mode": "dynamic", "max_accuracy_drop": 3.0},
        "bench": {"batch_sizes": [1, 4], "runs": 10, "rounds": 1, "warmup": 2},
        "target": {"litert_candidates": False},  # LiteRT beside ONNX Runtime: tests/test_runtime_choice.py
        "budget": {"max_accuracy_drop": 5.0, "latency_batch": 4},  # 300 held-out rows: one row is 0.33 pt
    }
    for section, values in overrides.items():
        spec[section] = {**spec.get(section, {}), **values}
    return recipe_from_dict(spec)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from compress.pipeline import run

    tmp = tmp_path_factory.mktemp("text-run")
    recipe = _recipe(tmp)
    return run(recipe, tmp / "out"), tmp / "out", recipe


def test_the_whole_transformer_pipeline_learns_shrinks_and_keeps_accuracy(text_run):
    report, out, _ = text_run
    acc = {v["name"]: v["accuracy"] for v in report["variants"] if not v["name"].startswith("litert-")}
    student = report["student"]["chosen"]
    assert set(acc) == {"baseline", "pruned", "distilled", "int8", f"{student}-int8", "compressed"}
    # 200 test rows of a separable set: chance is ~0.5; the fine-tuned baseline must be far above it
    assert acc["baseline"] >= 0.9, acc
    assert acc[f"{student}-int8"] >= acc["baseline"] - 0.05, acc
    assert report["budget"]["shipped"] != "baseline" and report["budget"]["judged_on"]["rows"] == 300
    # every FP32 export equals torch at batch 1 and 4, sequence 8 and 32, within 1e-4
    for name, parity in report["parity"].items():
        assert parity["max_abs_diff"] <= 1e-4 and parity["batch_sizes"] == [1, 4], (name, parity)
        assert parity["seq_lengths"] == [8, 32], parity
    # ONNX Runtime's optimizer fused each attention block (baseline 2 layers, students 1)
    assert report["parity"]["baseline"]["fused_ops"]["Attention"] == 2, report["parity"]
    assert report["parity"]["distilled"]["fused_ops"]["Attention"] == 1, report["parity"]
    search = report["quantize"]["compressed"]["search"]
    chosen = next(c for c in search["candidates"] if c["name"] == search["chosen"])
    assert chosen["meets_bar"] and chosen["agreement"] >= 0.9, search
    assert len(search["candidates"]) == 4
    prune = next(s for s in report["stages"] if s["name"] == "prune")["metrics"]
    assert prune["layers_kept"] == [0] and prune["heads"] == [2] and prune["ffn"] == [32]
    assert prune["params_after"] < prune["params_before"] / 2
    student_int8 = next(v for v in report["variants"] if v["name"] == f"{student}-int8")
    baseline = next(v for v in report["variants"] if v["name"] == "baseline")
    assert student_int8["size_bytes"] < baseline["size_bytes"] / 2
    assert report["environment"]["sequence_length"] == 32
    assert report["schema_version"] == 1 and report["comparison"]["candidate"] == "compressed"


def test_int8_ops_are_counted_per_artifact(text_run):
    report, _, _ = text_run
    for name in ("int8", "compressed"):
        ops = report["quantize"][name]["ops"]
        assert ops["int8"] > 0, ops
        assert ops["by_type"].get("MatMulInteger", 0) + ops["by_type"].get("DynamicQuantizeMatMul", 0) > 0
        assert ops["by_type"].get("QAttention", 0) > 0 and ops["by_type"].get("Attention", 0) == 0, ops


def test_the_shipped_bundle_runs_without_torch_from_its_own_tokenizer(text_run):
    """What an edge app does: tokenizer.json + model.onnx + sidecar; predictions match the bench's."""
    from runtime import load

    report, out, _ = text_run
    bundle = out / "target" / "cpu"
    meta = json.loads((bundle / "model.onnx.meta.json").read_text())
    assert meta["preprocess"]["kind"] == "text" and meta["labels"] == ["neg", "pos"]
    # the cpu target ran the shipped graph on validation token ids and masks and matched the source graph
    assert [(c["ok"], c["samples"] > 0) for c in meta["parity_vs_source"].values()] == [(True, True)]
    texts = ["the coffee was really delicious", "this snack arrived stale", "the tea was awful", "perfect box"]
    with load(bundle / "model.onnx") as runner:
        assert runner.predict_texts(texts) == ["pos", "neg", "neg", "pos"]
        feeds = runner.encode_texts(texts)
        assert feeds["input_ids"].dtype == np.int64 and feeds["attention_mask"][:, 0].all()
        long = runner.encode_texts(["tea " * 500])
        assert long["input_ids"].shape == (1, 32)  # cut to the trained max_length by the stored tokenizer


def test_rerun_reuses_every_stage(text_run, tmp_path):
    from compress.pipeline import run

    report, out, recipe = text_run
    again = run(recipe, out)
    cached = {s["name"]: s["cached"] for s in again["stages"]}
    assert all(cached[n] for n in ("train", "prune", "distill", "export", "quantize")), cached
    assert cached["compile"] or again["budget"]["shipped"] != report["budget"]["shipped"]
    assert candidate_accuracies(again) == candidate_accuracies(report)


def test_text_recipes_are_validated(tmp_path):
    from compress.plugins import choose
    from compress.recipe import RecipeError, recipe_from_dict

    def checked(spec):
        return choose(recipe_from_dict(spec))

    with pytest.raises(RecipeError, match=r"is text data; it needs a model.arch that takes text \(bert\)"):
        checked({"data": {"dataset": "fine-foods"}})
    # csv without data.path is a valid recipe (--data may fill it in); loading says what is missing
    checked({"data": {"dataset": "csv"}, "model": {"arch": "bert"}, "quantize": {"mode": "dynamic"}})
    with pytest.raises(RecipeError, match="quantize.mode: dynamic"):
        checked({"data": {"dataset": "fine-foods"}, "model": {"arch": "bert"}})
    with pytest.raises(RecipeError, match="quantize.mode: static"):
        checked({"quantize": {"mode": "dynamic"}})


def test_a_missing_text_column_is_one_clear_error(tmp_path):
    from common.errors import CompressError
    from compress.pipeline import run

    recipe = _recipe(tmp_path, data={"text_column": "review"})
    with pytest.raises(CompressError, match="has no column 'review'; columns: text, sentiment"):
        run(recipe, tmp_path / "out")
