"""Torch-free loading and inference of compiled artifacts, for edge apps.

    import runtime
    with runtime.load("model.onnx") as model:
        outputs = model.infer({"input": batch})      # dict of numpy arrays
        labels = model.predict(raw_images)           # uses the preprocessing stored with the artifact

Backends are imported lazily, when an artifact first needs them.
"""
from __future__ import annotations

from runtime.errors import ArtifactError, BackendMissing, InputError, RuntimeFailure
from runtime.loader import load, sidecar_path
from runtime.runner import Runner, TensorSpec

__all__ = ["load", "sidecar_path", "Runner", "TensorSpec", "ArtifactError", "BackendMissing", "InputError",
           "RuntimeFailure"]
__version__ = "0.1.0"
