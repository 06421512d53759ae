"""Train (or fine-tune) the full model: the baseline every candidate is judged against, and the teacher."""
from __future__ import annotations

from pathlib import Path

from common.errors import GateFailed
from compress.driver import Stage


def outputs(run):
    return {"baseline": run.path("baseline" + run.family.suffix)}


def body(run, out) -> dict:
    return run.family.train(run, out["baseline"])


def after(run, record) -> None:
    run.teacher = run.family.load(run, run.artifacts["baseline"])
    accuracy = record.metrics["val_accuracy"]
    if accuracy < run.family.chance(run.data):
        raise GateFailed(f"baseline reached only {accuracy:.3f} validation accuracy (near chance); "
                         "raise train.epochs or check the data")


def model_settings(run) -> dict:
    """The model section, with the bytes of pretrained weights (a new file at the same path retrains)."""
    from common.digest import file_digest
    from compress.driver import plain

    settings = plain(run.recipe.model)
    weights = run.recipe.model.weights
    return {**settings, "weights_sha256": file_digest(Path(weights))} if weights else settings


STAGE = Stage("train", ("recipe:seed", "data:fingerprint", "recipe:data", model_settings, "recipe:train"),
              outputs, body, after=after, all_ranks=True)
