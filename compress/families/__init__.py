"""Model families: what the stages need to know about a kind of model, behind one protocol and one registry.

A family builds or loads its model, trains it one way (its loss and loop), says how it shrinks, how it is exported
and checked, which INT8 flavour suits it and what the runtime's sidecar needs. The stages call these methods and
never branch on which family they hold. Three are built in: the image classifier (`image`: the ResNet-style CNN or
a user's module), the BERT-style text encoder (`encoder`) and an ONNX file taken as given (`onnx`: post-training
INT8 only). Register another with `register(family)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class ModelFamily(Protocol):
    name: str
    kind: str  # the data it takes and the targets that take it: "image" or "text"
    archs: tuple[str, ...]  # the recipe's model.arch values it serves
    suffix: str  # checkpoint file suffix: ".pt", ".safetensors"
    quantize_modes: tuple[str, ...]  # the recipe's quantize.mode values that suit it, the first the default
    int8_kind: str  # how the report names its INT8 flavour
    described: dict[str, str]  # how the report describes baseline, pruned and distilled

    def check_recipe(self, recipe) -> None: ...  # one-line RecipeError for settings this family cannot honour
    def prepare(self, recipe, raw) -> Any: ...  # the data source's data set -> model-ready data (with fingerprint)
    def describe_data(self, data) -> str: ...  # one log line
    def train(self, run, out: Path) -> dict[str, Any]: ...  # the baseline, saved to `out`; its metrics
    def chance(self, data) -> float: ...  # validation accuracy under which the baseline learned nothing
    def load(self, path: Path) -> Any: ...
    def shrinks(self, recipe) -> bool: ...
    def prune(self, run, raw: Path, pruned: Path) -> dict[str, Any]: ...  # shrink run.teacher, fine-tune (ablation)
    def distill(self, run, source: Path, out: Path) -> dict[str, Any]: ...
    def export(self, run, model, path: Path) -> dict[str, Any]: ...  # write ONNX, return its parity vs torch
    def quantize(self, run, source: str, fp32: Path, out: Path, *, tuned: bool) -> dict[str, Any]: ...
    def sidecar(self, run) -> dict[str, Any]: ...  # what an app needs to feed the shipped model
    def check_inputs(self, run) -> Any: ...  # real rows every target runs its compiled form on
    def torch_inputs(self, run) -> tuple[Any, Any]: ...  # (calibration, check) rows for torch-source targets
    def extra_files(self, run): ...  # None, or write(target_dir) -> files an app needs beside the model
    def unsupported(self, step: str) -> str | None: ...  # why it cannot run "prune" / "distill" / "litert", or None


def unsupported(family, step: str) -> str | None:
    """Why `family` cannot run `step` ("train", "prune", "distill", "litert"), or None when it can (a family
    without the hook can run them all)."""
    hook = getattr(family, "unsupported", None)
    return hook(step) if hook is not None else None


_FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> None:
    for arch in family.archs:
        _FAMILIES[arch] = family


def unregister(family: ModelFamily) -> None:
    for arch in family.archs:
        if _FAMILIES.get(arch) is family:
            del _FAMILIES[arch]


def archs() -> list[str]:
    _builtins()
    return sorted(_FAMILIES)


def for_arch(arch: str) -> ModelFamily:
    _builtins()
    return _FAMILIES[arch]


def _builtins() -> None:
    if "resnet-cnn" not in _FAMILIES:
        from compress.families.encoder.family import ENCODER
        from compress.families.image.family import IMAGE
        from compress.families.onnx_model.family import ONNX_MODEL

        register(IMAGE)
        register(ENCODER)
        register(ONNX_MODEL)
