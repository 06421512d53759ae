"""Reference full models and checkpoint loading; knows nothing of compression stages."""
from __future__ import annotations

from typing import Any

from torch import nn

from models.cnn import CNNConfig, ResNetCNN

__all__ = ["CNNConfig", "ResNetCNN", "build_model"]


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    if arch == "resnet-cnn":
        return ResNetCNN(CNNConfig(in_channels=input_shape[0], num_classes=num_classes, **options))
    if arch == "custom":
        return from_factory(options["factory"], input_shape, num_classes)
    raise ValueError(f"model arch {arch!r} unknown; known: resnet-cnn, custom")


def from_factory(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A user's own model: "package.module:function", called as function(input_shape, num_classes).

    The module is imported like any other: installed, or under the working directory (which is put on sys.path).
    """
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` does: the user's own package beside them
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model factory {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model factory module {module_name!r} cannot be imported: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attr!r} (model factory {spec!r})")
    model = factory(tuple(input_shape), num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
