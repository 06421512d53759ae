"""TFLite / LiteRT backend (imported only when a .tflite artifact is loaded).

Uses `ai_edge_litert.interpreter.Interpreter` (pip install './runtime[litert]') and falls back to
`tflite_runtime.interpreter.Interpreter` where a device has only that. A TFLite interpreter is not
thread-safe, so one lock serialises resize / set / invoke / get on a runner.
"""
from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runtime.errors import ArtifactError, BackendMissing, RuntimeFailure
from runtime.runner import Runner, TensorSpec

OPTIONS = ("threads",)


def _interpreter_module():
    """`ai_edge_litert.interpreter`, or `tflite_runtime.interpreter` where a device has only that."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise BackendMissing("no TFLite interpreter is installed (ai-edge-litert or tflite-runtime); "
                                 "pip install './runtime[litert]'") from None
    return interpreter


def op_interpreter(path: Path):
    """An allocated interpreter of the .tflite at `path` built without the default delegates (XNNPACK), so that
    its ops and tensors (`_get_ops_details`, `get_tensor_details`) are the model's own: a delegate would replace
    the ops it takes by one DELEGATE node. For reading a model's graph; inference goes through `TFLiteRunner`."""
    lib = _interpreter_module()
    interp = lib.Interpreter(model_path=str(path),
                             experimental_op_resolver_type=lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def check_tflite_bytes(data: bytes) -> str | None:
    """The reason `data` is not a plausible TFLite flatbuffer, or None. Checks the header and the root table."""
    n = len(data)
    if n < 16:
        return f"too short ({n} bytes) to be a TFLite model"
    if data[4:8] != b"TFL3":
        return "no TFL3 file identifier (not a TFLite model, or its header is damaged)"
    (root,) = struct.unpack_from("<I", data, 0)
    if root % 4 or root + 4 > n:
        return f"root table offset {root} lies outside the file ({n} bytes): truncated or corrupt"
    (vt_rel,) = struct.unpack_from("<i", data, root)
    vtable = root - vt_rel
    if vtable < 0 or vtable + 4 > n:
        return "root vtable lies outside the file: truncated or corrupt"
    vt_size, table_size = struct.unpack_from("<HH", data, vtable)
    if vt_size < 4 or vt_size % 2 or vtable + vt_size > n or root + table_size > n:
        return "root table runs past the end of the file: truncated or corrupt"
    return None


class TFLiteRunner(Runner):
    backend = "tflite"

    def __init__(self, path: Path, metadata: Mapping[str, Any] | None = None, *, threads: int | None = None) -> None:
        super().__init__(path, metadata)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"artifact {self.path} cannot be read: {e.strerror or e}") from None
        reason = check_tflite_bytes(data)
        if reason:
            raise ArtifactError(f"artifact {self.path} is not a valid TFLite model: {reason}")
        Interpreter = _interpreter_module().Interpreter
        self._lock = threading.Lock()
        try:
            interp = Interpreter(model_content=data, num_threads=threads)
            interp.allocate_tensors()
            self._in_details = interp.get_input_details()  # names are decoded here: corrupt ones raise
            self._out_details = interp.get_output_details()
        except Exception as e:  # ValueError / RuntimeError / UnicodeDecodeError from the interpreter
            raise ArtifactError(f"artifact {self.path} cannot be loaded by the TFLite interpreter: "
                                f"{_first_line(e)}") from None
        self._interp = interp
        self._in_index = {d["name"]: d["index"] for d in self._in_details}
        self._current = {d["index"]: tuple(int(v) for v in d["shape"]) for d in self._in_details}
        self.inputs = tuple(self._spec(d) for d in self._in_details)
        self.outputs = tuple(self._spec(d) for d in self._out_details)

    @staticmethod
    def _spec(d: dict) -> TensorSpec:
        sig = d.get("shape_signature")
        if sig is None or len(sig) != len(d["shape"]):
            sig = d["shape"]
        dims = tuple(int(v) if v >= 0 else None for v in sig)
        scale, zero = d.get("quantization", (0.0, 0))
        quant = (float(scale), int(zero)) if scale else None
        return TensorSpec(d["name"], dims, np.dtype(d["dtype"]), (), quant)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            interp = self._interp
            if interp is None:
                raise self._closed_error()
            try:
                resized = False
                for name, value in feeds.items():
                    index = self._in_index[name]
                    if value.shape != self._current[index]:
                        interp.resize_tensor_input(index, value.shape)
                        self._current[index] = value.shape
                        resized = True
                if resized:
                    interp.allocate_tensors()
                for name, value in feeds.items():
                    interp.set_tensor(self._in_index[name], value)
                interp.invoke()
                return [interp.get_tensor(d["index"]) for d in self._out_details]
            except Exception as e:
                raise RuntimeFailure(f"inference failed in the TFLite interpreter: {_first_line(e)}") from None

    def close(self) -> None:
        super().close()
        with self._lock:
            self._interp = None
