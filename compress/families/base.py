"""What a model family is: the methods the driver and the stages call, as one base class.

A family builds or loads its model, trains it one way (its loss and loop), says how it shrinks, how it is exported
and checked, which INT8 flavour suits it and what an app must feed the shipped model. The stages call these
methods and never branch on which family they hold. Subclass `ModelFamily`, implement every method that raises
NotImplementedError here, override the optional ones where the default does not fit, and register an instance
(`compress.families.register`). tests/test_families.py checks every registered family against this class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

STEPS = ("train", "prune", "distill", "litert", "label")


class ModelFamily:
    name: str
    kind: str  # the data it takes and the targets that take it: "image" or "text"
    archs: tuple[str, ...]  # the recipe's model.arch values it serves
    suffix: str  # checkpoint file suffix: ".pt", ".safetensors"
    quantize_modes: tuple[str, ...]  # the recipe's quantize.mode values that suit it, the first the default
    int8_kind: str  # how the report names its INT8 flavour
    described: dict[str, str]  # how the report describes baseline, pruned and distilled

    # -- required ------------------------------------------------------------------------------------------------
    def check_recipe(self, recipe) -> None:  # one-line RecipeError for settings this family cannot honour
        raise NotImplementedError

    def prepare(self, recipe, raw) -> Any:  # the data source's data set -> model-ready data (with fingerprint)
        raise NotImplementedError

    def describe_data(self, data) -> str:  # one log line
        raise NotImplementedError

    def train(self, run, out: Path) -> dict[str, Any]:  # the baseline, saved to `out`; its metrics
        raise NotImplementedError

    def chance(self, data) -> float:  # validation accuracy under which the baseline learned nothing
        raise NotImplementedError

    def load(self, run, path: Path) -> Any:  # a checkpoint this family wrote (or the file itself)
        raise NotImplementedError

    def shrinks(self, recipe) -> bool:  # whether the recipe's prune section changes this model
        raise NotImplementedError

    def prune(self, run, raw: Path, pruned: Path) -> dict[str, Any]:  # shrink run.teacher, fine-tune (ablation)
        raise NotImplementedError

    def distill(self, run, source: Path, out: Path) -> dict[str, Any]:
        raise NotImplementedError

    def export(self, run, model, path: Path) -> dict[str, Any]:  # write ONNX, return its parity vs torch
        raise NotImplementedError

    def quantize(self, run, source: str, fp32: Path, out: Path, *, tuned: bool) -> dict[str, Any]:
        raise NotImplementedError

    def preprocess(self, run) -> dict[str, Any]:  # the sidecar's "preprocess": what an app feeds the model
        raise NotImplementedError

    def check_inputs(self, run) -> Any:  # real rows every target runs its compiled form on
        raise NotImplementedError

    def torch_inputs(self, run) -> tuple[Any, Any]:  # (calibration, check) rows for torch-source targets
        raise NotImplementedError

    # -- optional: the defaults mean "nothing special" -----------------------------------------------------------
    def unsupported(self, step: str) -> str | None:
        """Why this family cannot run `step` (one of STEPS), or None when it can. By default it runs every step
        but "label" (unlabelled data labelled by the model as given), which needs `given_logits`."""
        if step == "label":
            return f"{self.name} models need labelled data in this version"
        return None

    def fit_data(self, recipe):
        """The recipe with the data settings the model itself fixes (an ONNX file's input size); by default as is."""
        return recipe

    def check_given(self, run) -> None:
        """Before labelling unlabelled data: a one-line CompressError when the model is not complete as given."""
        return None

    def given_logits(self, run, splits: dict) -> dict:
        """The model as given on unlabelled rows (split name -> logits); only where `unsupported("label")` is None."""
        raise NotImplementedError(self.unsupported("label"))

    def extra_files(self, run):
        """None, or write(target_dir) -> the files an app needs beside the model (a tokenizer)."""
        return None

    def pruned_at(self, run, ratio: float) -> Any:
        """`prune.ratio: auto`'s candidate: run.teacher shrunk by `ratio` in one step, not fine-tuned; only for families
        whose check_recipe lets `auto` through."""
        raise NotImplementedError(f"{self.name} models do not search pruning widths in this version")

    def train_width(self, run, pruned, epochs: float | None) -> tuple[dict[str, float], dict[str, Any]]:
        """`prune.ratio: auto`'s students: `pruned` (from pruned_at) fine-tuned and distilled as the prune and
        distill stages would (for `epochs`, or their own schedules when None); student name -> validation accuracy,
        and student name -> (the trained model, what its training returned) (the prune and distill stages reuse the
        chosen width's)."""
        raise NotImplementedError(f"{self.name} models do not search pruning widths in this version")

    # -- helpers every family may use (not called by the stages) -------------------------------------------------
    def device(self, run) -> str:
        """Where this run's training stages compute ("cpu", "cuda:0", ...): the recipe's train.device."""
        from compress.training.device import for_run

        return for_run(run)


class OneInputFamily(ModelFamily):
    """A family whose data set is one array of model-ready rows per split (`x`, `y`), fed to a one-input graph:
    the data source says how an app preprocesses them, and validation rows check every compiled form."""

    CHECK_ROWS = 256

    def preprocess(self, run) -> dict[str, Any]:
        return run.source.preprocess(run.data)

    def check_inputs(self, run) -> Any:
        return run.data.val.x[: self.CHECK_ROWS]


REQUIRED = tuple(name for name, value in vars(ModelFamily).items()
                 if callable(value) and name not in ("unsupported", "fit_data", "check_given", "given_logits",
                                                     "extra_files", "pruned_at", "train_width", "device")
                 and not name.startswith("_"))
