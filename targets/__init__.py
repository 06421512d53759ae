"""Per-target compilers behind one protocol and one registry; the registry is the only list of target names.

A target is a module (or any object) with

    NAME          its name in recipes and on the command line (`--target NAME`)
    RUNTIME       what runs its artifacts ("onnxruntime", "tensorrt", "litert", ...)
    SOURCE        what it compiles from: "onnx" (the chosen ONNX graph) or "torch" (the torch module)
    MODEL_KINDS   the models it takes: a set of "image" (CNN recipes) and "text" (Transformer recipes)
    available() -> (bool, why)     usable on this machine, and why (not); cheap, imports nothing heavy

and one compile entry point for its SOURCE (the input is never modified; a failed check raises TargetError
and nothing ships):

    SOURCE "onnx":  compile(onnx_path, spec, out_dir, metadata, *, check) -> Artifact
    SOURCE "torch": compile_module(model, spec, out_dir, metadata, *, calib, check, name="model") -> Artifact

Optional: SIBLING, the name of a torch-source target whose artifacts run on the same machine (cpu: "mobile",
LiteRT on the CPU); the pipeline builds and times its candidates beside this target's own (recipe
`target.runtime` says which may ship).

`check` is real input samples: a numpy array, or a tuple of arrays, one per model input in the graph's order
(may be None). Every target gets it and runs its artifact on it before calling it done.

The built-ins are registered below by module path (imported on first use); `register(name, target)` adds
another one, a module path or an object, without editing this package:

    import targets
    targets.register("my-npu", "my_package.npu_target")   # or an object satisfying `OnnxTarget`
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from common.errors import CompressError

SOURCES = ("onnx", "torch")
MODEL_KINDS = ("image", "text")

# name -> module path (imported on first use) or an object satisfying the protocol; in listing order
_REGISTRY: dict[str, str | object] = {
    "cpu": "targets.onnxruntime_cpu",
    "gpu": "targets.gpu",
    "jetson": "targets.jetson",
    "mobile": "targets.tflite",
}


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


@runtime_checkable
class Target(Protocol):
    """What every target has; see `OnnxTarget` and `TorchTarget` for the compile entry point of each SOURCE."""

    NAME: str
    RUNTIME: str
    SOURCE: str  # "onnx" or "torch"
    MODEL_KINDS: frozenset[str]  # of "image", "text"

    def available(self) -> tuple[bool, str]: ...


@runtime_checkable
class OnnxTarget(Target, Protocol):
    def compile(self, onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
                check: Any = None) -> Artifact: ...


@runtime_checkable
class TorchTarget(Target, Protocol):
    def compile_module(self, model: Any, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
                       calib: Any, check: Any = None, name: str = "model") -> Artifact: ...


def protocol_problems(target: object, name: str | None = None) -> list[str]:
    """What keeps `target` from being a target (empty when it is one): missing members, a SOURCE or model kind
    that is not known, a compile entry point that does not match its SOURCE, a NAME other than `name`."""
    missing = [a for a in ("NAME", "RUNTIME", "SOURCE", "MODEL_KINDS", "available") if not hasattr(target, a)]
    if missing:
        return [f"missing {', '.join(missing)}"]
    out = []
    if name is not None and target.NAME != name:
        out.append(f"NAME is {target.NAME!r}, registered as {name!r}")
    if target.SOURCE not in SOURCES:
        out.append(f"SOURCE {target.SOURCE!r} is not one of {', '.join(SOURCES)}")
    else:
        entry = "compile" if target.SOURCE == "onnx" else "compile_module"
        if not callable(getattr(target, entry, None)):
            out.append(f"SOURCE {target.SOURCE!r} needs {entry}(...)")
    kinds = target.MODEL_KINDS
    if isinstance(kinds, str) or not set(kinds) or not set(kinds) <= set(MODEL_KINDS):
        out.append(f"MODEL_KINDS {kinds!r} must be a non-empty set of {', '.join(MODEL_KINDS)}")
    if not callable(target.available):
        out.append("available is not callable")
    return out


def register(name: str, target: str | object, *, replace: bool = False) -> None:
    """Add a target: `target` is a module path (imported on first use, checked then) or an object (a module, a
    class instance) satisfying the protocol (checked now). Re-registering a name needs `replace=True`."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise TargetError(f"target name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in _REGISTRY and not replace:
        raise TargetError(f"target {name!r} is already registered; pass replace=True to replace it")
    if not isinstance(target, str):
        problems = protocol_problems(target, name)
        if problems:
            raise TargetError(f"cannot register target {name!r}: {'; '.join(problems)}")
    _REGISTRY[name] = target


def unregister(name: str) -> None:
    """Remove a target (a test's toy, say); unknown names raise TargetError."""
    if name not in _REGISTRY:
        raise TargetError(unknown_message(name))
    del _REGISTRY[name]


def names(kind: str | None = None) -> list[str]:
    """Every registered target name, in registration order (built-ins first); with `kind` ("image" or "text"),
    only the targets that take that kind of model (imports those targets' modules)."""
    if kind is None:
        return list(_REGISTRY)
    return [n for n in _REGISTRY if kind in _model_kinds(n)]


def _model_kinds(name: str) -> frozenset[str]:
    try:
        return frozenset(get_target(name).MODEL_KINDS)
    except TargetError:
        return frozenset()


def unknown_message(name: str) -> str:
    close = difflib.get_close_matches(str(name), names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"target {name!r} unknown; known: {', '.join(names())}{hint}"


def get_target(name: str):
    """The registered target `name` (a module or object satisfying `Target`); TargetError when unknown."""
    if name not in _REGISTRY:
        raise TargetError(unknown_message(name))
    entry = _REGISTRY[name]
    if not isinstance(entry, str):
        return entry
    try:
        module: ModuleType = importlib.import_module(entry)
    except ImportError as e:
        raise TargetError(f"target {name!r}: cannot import {entry}: {e}") from None
    problems = protocol_problems(module, name)
    if problems:
        raise TargetError(f"target {name!r} ({entry}) is not a target: {'; '.join(problems)}")
    return module


def availability() -> dict[str, tuple[bool, str]]:
    """Each registered target: usable on this machine, and why (not)."""
    out = {}
    for name in names():
        try:
            out[name] = get_target(name).available()
        except TargetError as e:
            out[name] = (False, str(e))
    return out


def check_feeds(check, inputs, limit: int | None = None) -> dict[str, Any]:
    """`check` (an array, or a tuple/list of arrays, one per model input in the graph's order) as feeds for a
    `runtime.Runner` with `inputs` (its `TensorSpec`s): each array cast to its input's dtype, its first `limit`
    rows. TargetError when the number of arrays does not match the inputs."""
    import numpy as np

    arrays = tuple(check) if isinstance(check, (tuple, list)) else (check,)
    if len(arrays) != len(inputs):
        raise TargetError(f"check has {len(arrays)} array(s) for a model with {len(inputs)} input(s) "
                          f"({', '.join(s.name for s in inputs)})")
    return {spec.name: np.ascontiguousarray(np.asarray(a)[:limit], dtype=spec.dtype)
            for spec, a in zip(inputs, arrays)}
