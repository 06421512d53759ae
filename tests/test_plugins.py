"""A model family and a data source written outside compress/ -- a tiny MLP on synthetic clusters -- go through
the whole pipeline (train, prune, distill, export, INT8, compile, bench, budget, report) by registration alone."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass(frozen=True)
class Clusters:
    """Four Gaussian clusters in 16 dimensions: separable enough to learn in seconds, noisy enough not to be
    trivially perfect."""

    name: str = "toy-clusters"
    kind: str = "image"  # to the targets: one float array in, logits out

    def check_recipe(self, data_config) -> None:
        return None

    def load(self, recipe, learns: bool = True):
        from bench.data.splits import ImageDataset, Split

        rng = np.random.default_rng(recipe.seed)
        centres = rng.normal(0, 1.0, (4, 16)).astype(np.float32)

        def split(n: int) -> Split:
            y = rng.integers(0, 4, n)
            return Split((centres[y] + rng.normal(0, 0.9, (n, 16))).astype(np.float32), y.astype(np.int64))

        train, val, test = split(2000), split(400), split(600)
        digest = hashlib.sha256(b"".join(s.x.tobytes() + s.y.tobytes() for s in (train, val, test))).hexdigest()
        return ImageDataset(self.name, train, val, test, Split(train.x[:64], train.y[:64]),
                            ("north", "east", "south", "west"), 0.0, 1.0, digest[:16])

    def preprocess(self, dataset) -> dict:
        return {"layout": "NF", "features": 16}


def _mlp_family():
    from torch import nn

    from compress.families.image.family import ImageClassifier

    class TinyMLP(ImageClassifier):
        """An MLP family: its own model; training, channel pruning, distillation and static INT8 as for images."""

        name = "toy-mlp"
        archs = ("toy-mlp",)
        described = {"baseline": "MLP 16-64-64-4", "pruned": "MLP, hidden units pruned",
                     "distilled": "MLP, pruned + distilled"}

        def new_model(self, run):
            features, classes = run.data.input_shape[0], run.data.num_classes
            return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                 nn.Linear(64, classes))

    return TinyMLP()


@pytest.fixture
def plugins():
    from compress import data, families

    family, source = _mlp_family(), Clusters()
    families.register(family)
    data.register(source)
    yield family, source
    families.unregister(family)
    data.unregister(source)


def _recipe(**overrides):
    from compress.recipe import recipe_from_dict

    spec = {
        "name": "toy-mlp-clusters",
        "data": {"dataset": "toy-clusters"},
        "model": {"arch": "toy-mlp"},
        "train": {"epochs": 6, "batch_size": 64, "lr": 0.05},
        "prune": {"ratio": 0.5, "round_to": 4, "finetune_epochs": 2},
        "distill": {"epochs": 2, "temperature": 2.0, "alpha": 0.5},
        "quantize": {"search": False, "max_accuracy_drop": 5.0},
        "bench": {"batch_sizes": [1, 16], "runs": 10, "rounds": 1, "warmup": 2},
        "budget": {"max_accuracy_drop": 5.0, "allow_baseline": True},
        "target": {"litert_candidates": False},  # LiteRT beside ONNX Runtime: tests/test_runtime_choice.py
        **overrides,
    }
    return recipe_from_dict(spec)


def test_an_unregistered_family_or_source_is_a_recipe_error():
    from compress.plugins import choose
    from compress.recipe import RecipeError

    with pytest.raises(RecipeError, match="data.dataset = 'toy-clusters' is not allowed"):
        choose(_recipe())


def test_a_toy_family_and_data_source_run_the_whole_pipeline(plugins, tmp_path):
    from compress.pipeline import run
    from runtime import load, sidecar_path

    report = run(_recipe(), tmp_path / "out")
    acc = {v["name"]: v["accuracy"] for v in report["variants"]}
    assert acc["baseline"] >= 0.8, acc  # 4 classes: chance is 0.25
    for name in ("pruned", "distilled", "int8", "distilled-int8"):
        assert acc[name] >= acc["baseline"] - 0.05, (name, acc)  # every candidate within 5 pt of its baseline
    prune = next(s for s in report["stages"] if s["name"] == "prune")["metrics"]
    assert prune["params_after"] < prune["params_before"]
    assert report["dataset"]["name"] == "toy-clusters"

    # the shipped artifact runs through runtime/ on the source's rows, and its sidecar is the source's and family's
    shipped = next(v for v in report["variants"] if v["name"] == "compressed")
    artifact = tmp_path / "out" / shipped["artifact"]
    sidecar = json.loads(sidecar_path(artifact).read_text())
    assert sidecar["labels"] == ["north", "east", "south", "west"]
    assert sidecar["preprocess"] == {"layout": "NF", "features": 16}
    test = Clusters().load(_recipe()).test
    with load(artifact) as runner:
        predictions = next(iter(runner.infer(test.x).values())).argmax(1)
    assert (predictions == test.y).mean() == pytest.approx(shipped["accuracy"], abs=1e-9)

    # a rerun finds every stage up to the bench in the cache (what ships after it is the bench's timing call); a
    # changed distillation reruns distill and what follows only
    again = run(_recipe(), tmp_path / "out")
    before_bench = [s for s in again["stages"][:[s["name"] for s in again["stages"]].index("bench")]]
    assert before_bench and all(s["cached"] for s in before_bench), again["stages"]
    changed = run(_recipe(distill={"epochs": 1, "temperature": 2.0, "alpha": 0.5}), tmp_path / "out")
    cached = {s["name"]: s["cached"] for s in changed["stages"]}
    assert cached["train"] and cached["prune"] and not cached["distill"] and not cached["export"], cached
