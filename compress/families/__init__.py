"""Model families: what the stages need to know about a kind of model, behind one protocol and one registry.

What a family is, the methods the stages call, is `compress.families.base.ModelFamily`. Three are built in: the
image classifier (`image`: the ResNet-style CNN or a user's module), the BERT-style text encoder (`encoder`) and an
ONNX file taken as given (`onnx_model`: post-training INT8 only). Register another with `register(family)`.
"""
from __future__ import annotations

from compress.families.base import ModelFamily

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
