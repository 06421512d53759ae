"""The backend-independent part of a runner: metadata, input validation, pre/post-processing."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runtime.errors import InputError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]  # str or None marks a dynamic dimension
    dtype: np.dtype

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


class Runner:
    """Subclasses implement `_run(feeds) -> list of arrays` and fill the specs."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    backend: str = ""

    def __init__(self, path: Path, metadata: Mapping[str, Any] | None) -> None:
        self.path = Path(path)
        self.metadata: dict[str, Any] = dict(metadata or {})

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        ins = "; ".join(s.describe() for s in self.inputs)
        return f"<{type(self).__name__} {self.path.name} [{self.backend}] inputs {ins}>"

    def validate(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(feeds, np.ndarray):
            if len(self.inputs) != 1:
                names = ", ".join(s.name for s in self.inputs)
                raise InputError(f"model has {len(self.inputs)} inputs ({names}); pass a dict of arrays")
            feeds = {self.inputs[0].name: feeds}
        if not isinstance(feeds, Mapping):
            raise InputError(f"inputs must be a numpy array or a dict of them, got {type(feeds).__name__}")
        expected = {s.name: s for s in self.inputs}
        unknown = sorted(set(feeds) - set(expected))
        missing = sorted(set(expected) - set(feeds))
        if unknown or missing:
            raise InputError(
                f"input names {sorted(feeds)} do not match the model's: expected "
                + "; ".join(s.describe() for s in self.inputs)
            )
        checked = {}
        for name, spec in expected.items():
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype != spec.dtype:
                raise InputError(f"input {name!r} has dtype {value.dtype.name}; expected {spec.describe()}")
            if value.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != v for d, v in zip(spec.shape, value.shape)
            ):
                raise InputError(f"input {name!r} has shape {list(value.shape)}; expected {spec.describe()}")
            if 0 in value.shape:
                raise InputError(f"input {name!r} is empty (shape {list(value.shape)})")
            checked[name] = np.ascontiguousarray(value)
        return checked

    def infer(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Run the model; returns {output name: array}. Safe to call from several threads."""
        outs = self._run(self.validate(feeds))
        return {spec.name: out for spec, out in zip(self.outputs, outs)}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    # -- pre/post-processing stored with the artifact by the pipeline --------------------------
    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        pre = self.metadata.get("preprocess")
        if not pre:
            return np.asarray(raw, dtype=self.inputs[0].dtype)
        x = np.asarray(raw, dtype=np.float32) * float(pre.get("scale", 1.0))
        if x.ndim == len(self.inputs[0].shape) - 1:
            x = x[:, None] if pre.get("layout", "NCHW") == "NCHW" else x[..., None]
        return ((x - float(pre.get("mean", 0.0))) / float(pre.get("std", 1.0))).astype(self.inputs[0].dtype)

    def predict(self, raw: np.ndarray) -> list[str]:
        """Raw inputs (e.g. uint8 images, N x H x W) -> label names, using the stored preprocessing."""
        logits = next(iter(self.infer(self.preprocess(raw)).values()))
        labels = self.metadata.get("labels") or [str(i) for i in range(logits.shape[-1])]
        return [labels[i] for i in logits.argmax(-1)]


def read_metadata(path: Path) -> dict[str, Any]:
    from runtime.errors import ArtifactError

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"metadata {path} is unreadable or not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"metadata {path} must hold a JSON object")
    return data
