"""ONNX Runtime backend (imported only when an .onnx artifact is loaded)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.errors import ArtifactError, BackendMissing, RuntimeFailure
from runtime.runner import Runner, TensorSpec

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendMissing("onnxruntime is not installed; pip install 'edge-compress[runtime]'") from None
    return onnxruntime


def _check_onnx_bytes(path: Path) -> None:
    """Cheap structural check so that obviously wrong files never reach native code."""
    with open(path, "rb") as f:
        head = f.read(64)
    # An ONNX ModelProto starts with field 1 (ir_version, varint) -> tag byte 0x08.
    if not head or head[0] != 0x08:
        raise ArtifactError(f"{path} is not an ONNX model (it does not start with an ONNX header)")


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: Path, metadata: Mapping[str, Any] | None = None, *, threads: int | None = None,
                 providers: Sequence[str] | None = None, optimization: str = "all", spinning: bool = True) -> None:
        super().__init__(path, metadata)
        ort = _import_ort()
        _check_onnx_bytes(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        wanted = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendMissing(f"ONNX Runtime provider(s) {missing} not available here; available: {available}")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=wanted)
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"{self.path} cannot be loaded by ONNX Runtime: {first[:300]}") from None
        self.providers = self._session.get_providers()
        self.inputs = tuple(self._spec(i) for i in self._session.get_inputs())
        self.outputs = tuple(self._spec(o) for o in self._session.get_outputs())

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        dims = tuple(d if isinstance(d, int) else None for d in arg.shape)
        return TensorSpec(arg.name, dims, np.dtype(_ORT_TYPES.get(arg.type, np.float32)))

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(None, feeds)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RuntimeFailure(f"inference failed in ONNX Runtime: {first[:300]}") from None

    def run_raw(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """No validation: for benchmarks that measure the session itself."""
        return self._session.run(None, feeds)

    def close(self) -> None:
        self._session = None
