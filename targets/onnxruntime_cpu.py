"""`cpu` target: ONNX Runtime on CPU. The artifact is the ONNX graph plus a metadata sidecar."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from targets import Artifact, TargetSpec

RUNTIME = "onnxruntime"


def available() -> tuple[bool, str]:
    try:
        import onnxruntime
    except ImportError:
        return False, "onnxruntime is not installed (pip install 'edge-compress[runtime]')"
    return True, f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"


def compile(onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any]) -> Artifact:
    """Copy the graph under the target's name and store preprocessing/provenance beside it."""
    from common.atomic import atomic_path, write_json
    from runtime import load, sidecar_path

    out_path = Path(out_dir) / "model.onnx"
    with atomic_path(out_path) as tmp:
        shutil.copyfile(onnx_path, tmp)
        with load(tmp, threads=spec.threads):  # a graph that ONNX Runtime cannot open never ships
            pass
    meta = {**metadata, "target": spec.name, "runtime": RUNTIME, "threads": spec.threads}
    write_json(sidecar_path(out_path), meta)
    return Artifact(out_path, spec.name, RUNTIME, meta)
