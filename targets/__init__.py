"""Per-target compilers: `compile(onnx_path, spec, out_dir, metadata) -> Artifact`; the input is never modified.

A target module has `available() -> (bool, why)` and `compile(...)`. One whose converter works from the torch
module rather than the ONNX graph (mobile: litert-torch) says so with `SOURCE = "torch"` and offers
`compile_module(model, spec, out_dir, metadata, calib=..., check=...)` instead.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import CompressError

KNOWN_TARGETS = ("cpu", "gpu", "jetson", "mobile")
_MODULES = {"cpu": "targets.onnxruntime_cpu", "gpu": "targets.gpu", "jetson": "targets.jetson",
            "mobile": "targets.tflite"}


class TargetError(CompressError):
    """Unknown target, or one that cannot be built here; the message says why and what to do (exit code 2)."""


@dataclass(frozen=True)
class TargetSpec:
    name: str
    threads: int = 2
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    path: Path
    target: str
    runtime: str
    metadata: dict[str, Any]
    # every file the artifact consists of (for the stage cache); empty means `path` and its sidecar
    files: tuple[Path, ...] = ()


def get_target(name: str):
    if name not in KNOWN_TARGETS:
        raise TargetError(f"target {name!r} unknown; known: {', '.join(KNOWN_TARGETS)}")
    if name not in _MODULES:
        raise TargetError(f"target {name!r} is not built into this version yet; available: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name])


def availability() -> dict[str, tuple[bool, str]]:
    """Each known target: usable on this machine, and why (not)."""
    out = {}
    for name in KNOWN_TARGETS:
        try:
            out[name] = get_target(name).available()
        except TargetError as e:
            out[name] = (False, str(e))
    return out
