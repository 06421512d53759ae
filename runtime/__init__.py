"""Torch-free loading and inference of compiled artifacts, for edge apps.

    import runtime
    with runtime.load("model.onnx") as model:
        outputs = model.infer({"input": batch})      # dict of numpy arrays
        labels = model.predict(raw_images)           # uses the preprocessing stored with the artifact

`.onnx` runs on ONNX Runtime, `.tflite` on LiteRT (ai-edge-litert, or tflite-runtime as a fallback).
Backends are imported lazily, when an artifact first needs them: `import runtime` pulls in numpy only.
Files are checked before native code sees them (ArtifactError); `load(path, isolate=True)` also probe-loads
the artifact in a child process so that a file that crashes the native library cannot crash this one.
"""
from __future__ import annotations

from runtime.errors import ArtifactError, BackendMissing, InputError, RuntimeFailure
from runtime.loader import load, probe, sidecar_path
from runtime.runner import Runner, TensorSpec

__all__ = ["load", "probe", "sidecar_path", "Runner", "TensorSpec", "ArtifactError", "BackendMissing", "InputError",
           "RuntimeFailure"]
__version__ = "0.1.0"
