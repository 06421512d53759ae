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
    """The model section, with the bytes of pretrained weights and of a model given by path (a new file at the same
    path retrains)."""
    from common.digest import file_digest
    from compress.driver import plain

    settings = plain(run.recipe.model)
    weights, path = run.recipe.model.weights, run.recipe.model.path
    if weights:
        settings["weights_sha256"] = file_digest(Path(weights))
    if path:  # an ONNX file or a Hugging Face folder: its bytes, so that a model re-saved in place retrains
        settings["path_sha256"] = path_digest(Path(path))
    return settings


def path_digest(path: Path) -> str:
    """A file's sha256, or for a model folder that of its config and weight files together."""
    import hashlib

    from common.digest import file_digest

    if path.is_file():
        return file_digest(path)
    files = sorted(p for p in path.glob("*") if p.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"))
    return hashlib.sha256("".join(f"{p.name}:{file_digest(p)}" for p in files).encode()).hexdigest()


STAGE = Stage("train", ("recipe:seed", "data:fingerprint", "recipe:data", model_settings, "recipe:train"),
              outputs, body, after=after, all_ranks=True)
