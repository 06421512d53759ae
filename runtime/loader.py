"""`load(path)` picks the backend from the artifact's type and checks the file before native code sees it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime.errors import ArtifactError
from runtime.runner import Runner, read_metadata

SIDECAR_SUFFIX = ".meta.json"


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """Metadata the pipeline stores beside an artifact: preprocessing, labels, provenance."""
    p = Path(artifact)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def load(path: str | os.PathLike, **options: Any) -> Runner:
    """Open an artifact. Options: threads (int), providers (list of ONNX Runtime providers)."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact {p} does not exist")
    if not p.is_file():
        raise ArtifactError(f"artifact {p} is not a file")
    size = p.stat().st_size
    if size == 0:
        raise ArtifactError(f"artifact {p} is empty (0 bytes)")
    meta_file = sidecar_path(p)
    metadata = read_metadata(meta_file) if meta_file.exists() else {}
    if p.suffix == ".onnx":
        from runtime.onnx_backend import OnnxRunner

        return OnnxRunner(p, metadata, **options)
    raise ArtifactError(f"artifact {p}: unknown type {p.suffix or '(no suffix)'!r}; this runtime reads .onnx")
