"""`load(path)` picks the backend from the artifact's type and checks the file before native code sees it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from runtime.errors import ArtifactError, BackendMissing, RuntimeFailure
from runtime.runner import Runner, read_metadata

SIDECAR_SUFFIX = ".meta.json"
# suffix -> (module, class, the options its runner takes); modules are imported only when needed
_BACKENDS = {
    ".onnx": ("runtime.onnx_backend", "OnnxRunner", ("threads", "providers", "optimization", "spinning")),
    ".tflite": ("runtime.tflite_backend", "TFLiteRunner", ("threads",)),
    ".engine": ("runtime.tensorrt_backend", "TensorRTRunner", ("device",)),
    ".plan": ("runtime.tensorrt_backend", "TensorRTRunner", ("device",)),
}
PROBE_TIMEOUT_S = 300


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """Metadata the pipeline stores beside an artifact: preprocessing, labels, provenance."""
    p = Path(artifact)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def load(path: str | os.PathLike, *, isolate: bool = False, **options: Any) -> Runner:
    """Open an artifact: .onnx (ONNX Runtime) or .tflite (LiteRT / tflite-runtime).

    Options: threads (int); for .onnx also providers (list of ONNX Runtime providers), optimization
    ("none" | "basic" | "extended" | "all") and spinning (bool). Without `providers`, an .onnx runs on the providers
    its sidecar names, in order (CUDA first for the gpu target), where this onnxruntime has them; when the first
    one is missing it runs on the CPU with a `ProviderFallbackWarning` saying why (`runner.providers`: what the
    session really uses, `runner.fallback_reason`). An explicit `providers` wins and must exist here.
    With isolate=True the artifact is first loaded and run once on zeros in a child process, so that a file that
    crashes the native library raises ArtifactError here instead of killing this process (costs one extra process
    start and load).
    """
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact {p} does not exist")
    if p.is_dir() and (p / "manifest.json").is_file():  # a jetson deploy bundle
        from runtime.tensorrt_backend import TensorRTRunner

        return TensorRTRunner(p, {}, **options)
    if not p.is_file():
        raise ArtifactError(f"artifact {p} is not a file")
    if p.stat().st_size == 0:
        raise ArtifactError(f"artifact {p} is empty (0 bytes)")
    backend = _BACKENDS.get(p.suffix.lower())
    if backend is None:
        known = ", ".join(_BACKENDS)
        raise ArtifactError(f"artifact {p}: unknown type {p.suffix or '(no suffix)'!r}; this runtime reads {known}")
    module, cls, allowed = backend
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"load() got unknown option(s) {unknown} for {p.suffix} artifacts; "
                        f"known: {', '.join(allowed)}, isolate")
    meta_file = sidecar_path(p)
    metadata = read_metadata(meta_file) if meta_file.exists() else {}
    if isolate:
        probe(p, **options)
    import importlib

    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls(p, metadata, **options)


def child_python(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment for `python -m module args` in a child that imports this checkout's packages: the
    project root leads PYTHONPATH, and -P keeps the caller's working directory (which may hold its own runtime/)
    off sys.path."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return [sys.executable, "-P", "-m", module, *args], env


def probe(path: str | os.PathLike, timeout: float = PROBE_TIMEOUT_S, **options: Any) -> None:
    """Load `path` and run it once on zeros in a child process; raise the runtime's error if that fails.

    The child imports this same `runtime` package. A child killed by a signal (a crash in native code)
    becomes ArtifactError naming the signal.
    """
    cmd, env = child_python("runtime._probe", str(path), json.dumps(options))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"artifact {path}: probe load did not finish within {timeout:.0f} s") from None
    if proc.returncode == 0:
        return
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise ArtifactError(f"artifact {path} crashed the backend in a probe process ({name}); "
                            "the file is corrupt or uses something the backend cannot handle")
    errors = {3: ArtifactError, 4: BackendMissing, 5: TypeError, 6: ValueError}
    raise errors.get(proc.returncode, RuntimeFailure)(last or f"probe of {path} failed (exit {proc.returncode})")
