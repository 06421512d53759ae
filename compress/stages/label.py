"""Unlabelled data: the model as given (pretrained, no training) labels every row with its top-1, so that every
later figure is top-1 agreement with the baseline and the run's accuracy budget applies to agreement."""
from __future__ import annotations

from compress.driver import Stage
from compress.stages.train import model_settings

SPLITS = ("train", "val", "test", "calib")
NOTE = "unlabelled data: every accuracy figure is top-1 agreement with the baseline (its predictions stand in for labels)"


def check(run) -> None:
    """Before any work: unlabelled data needs a model that is complete as given and a family that can run it."""
    from common.errors import CompressError

    if getattr(run.data, "labelled", True):
        return
    why = run.family.unsupported("label")
    if why:
        raise CompressError(f"{run.data.name} has no labels, and {why}; give labels (class sub-folders, a label "
                            "column or y in the .npz)")
    run.family.check_given(run)  # e.g. a module needs its pretrained weights to be a model at all
    trains = run.family.unsupported("train") is None
    if trains and run.recipe.train.epochs > 0:  # no other meaning: training needs labels
        import dataclasses

        from compress.driver import log

        log(f"[label] {run.data.name} has no labels: the baseline is the model as given (train.epochs "
            f"{run.recipe.train.epochs:g} -> 0; training or fine-tuning needs labelled data)")
        run.recipe = run.recipe.replace(train=dataclasses.replace(run.recipe.train, epochs=0.0))


def outputs(run):
    return {"labels": run.path("baseline.labels.npz")}


def body(run, out) -> dict:
    import numpy as np

    from common.atomic import atomic_path

    logits = run.family.given_logits(run, {name: getattr(run.data, name).x for name in SPLITS})
    with atomic_path(out["labels"]) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{name: values.argmax(1).astype(np.int64) for name, values in logits.items()})
    return {"classes": int(next(iter(logits.values())).shape[1]), "rows": {n: len(v) for n, v in logits.items()},
            "note": NOTE}


def after(run, record) -> None:
    import numpy as np

    with np.load(run.artifacts["labels"]) as stored:
        labels = {name: stored[name] for name in SPLITS}
    run.data = run.data.with_baseline_labels(labels, record.metrics["classes"])


STAGE = Stage("label", ("recipe:seed", "data:fingerprint", model_settings), outputs, body,
              enabled=lambda run: not getattr(run.data, "labelled", True), after=after, all_ranks=True)
