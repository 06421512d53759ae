"""ONNX Runtime backend (imported only when an .onnx artifact is loaded)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.errors import ArtifactError, BackendMissing, RuntimeFailure
from runtime.onnx_check import CorruptModel, check_onnx_bytes
from runtime.runner import Runner, TensorSpec

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}
_OPTIMIZATION = ("none", "basic", "extended", "all")
# ONNX Runtime's CPU SkipLayerNormalization kernel runs several times slower than the Add + LayerNormalization it
# replaces (ORT 1.31, 1 x 128 x 384: 338 against 70 us on one thread; tools/skip_layernorm.py), so a CPU-only
# session keeps them apart. Other providers have their own fast kernels and keep the fusion.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
# ONNX Runtime's WeightBiasQuantization (a basic-level QDQ pass) rounds the float weights of every Conv / Gemm fed by a
# DequantizeLinear to per-tensor INT8 at load time: a layer an INT8 model keeps in float on purpose (the INT8
# search's fallback, a depthwise convolution) silently becomes per-tensor INT8, the failure float was meant to avoid.
# Measured on EfficientNet-Lite1 with its depthwise convolutions kept float: 8.7 dB logit SQNR with the pass, 18.2 dB
# without (all-INT8: 15.1 dB). Every provider's session skips it.
DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)


def disabled_optimizers(providers: Sequence[str]) -> list[str]:
    """The `disabled_optimizers` every session of this project passes to ONNX Runtime for these providers."""
    cpu_only = list(providers) == ["CPUExecutionProvider"]
    return list(DISABLED_OPTIMIZERS) + (list(CPU_DISABLED_OPTIMIZERS) if cpu_only else [])
OPTIONS = ("threads", "providers", "optimization", "spinning")
CPU = "CPUExecutionProvider"


class ProviderFallbackWarning(RuntimeWarning):
    """An artifact's preferred execution provider (its sidecar's `providers`) cannot run here; it runs on the CPU."""


def resolve_providers(wanted: Sequence[str], available: Sequence[str], device: str = "",
                      version: str = "") -> tuple[list[str], str | None]:
    """The providers of `wanted` that this onnxruntime build has, in order (CPU appended when none is left), and
    why the first one wanted is not among them (None when it is). `device`, `version`: onnxruntime's
    get_device() and __version__, for the message."""
    use = [p for p in wanted if p in available] or [CPU]
    if not wanted or use[0] == wanted[0]:
        return use, None
    kind = ", CPU only" if device.upper() == "CPU" else f", {device}" if device else ""
    build = f"onnxruntime {version}".strip() + kind
    return use, (f"{wanted[0]} is not available in this onnxruntime build ({build}); running on {use[0]}"
                 + (" (install onnxruntime-gpu for CUDA)" if wanted[0] == "CUDAExecutionProvider" else ""))


def providers_for(wanted: Sequence[str]) -> tuple[list[str], str | None]:
    """`resolve_providers` against the installed onnxruntime."""
    ort = _import_ort()
    return resolve_providers(list(wanted), ort.get_available_providers(), ort.get_device(), ort.__version__)


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendMissing("onnxruntime is not installed; pip install ./runtime (the edge-compress-runtime distribution)") from None
    return onnxruntime


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def sniff_format(head: bytes) -> str | None:
    """A name for a file that is plainly some other format, for the error message."""
    if head[4:8] == b"TFL3":
        return "a TFLite model (use the .tflite suffix)"
    if head[:2] == b"PK":
        return "a zip archive (a PyTorch checkpoint? export it to ONNX first)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (a PyTorch checkpoint? export it to ONNX first)"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "an image"
    if head[:4] == b"\x89HDF":
        return "an HDF5 file (a Keras model?)"
    if head and all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "a text file"
    return None


def check_onnx_file(path: Path) -> tuple[bytes, dict]:
    """Reads the file and checks its structure in pure Python; raises ArtifactError with a one-line reason."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"artifact {path} cannot be read: {e.strerror or e}") from None
    other = sniff_format(data[:32])
    if other:
        raise ArtifactError(f"artifact {path} is not an ONNX model: it looks like {other}")
    try:
        info = check_onnx_bytes(data)
    except CorruptModel as e:
        raise ArtifactError(f"artifact {path} is not a valid ONNX model (corrupt or truncated?): {e}") from None
    return data, info


class OnnxRunner(Runner):
    """ONNX Runtime InferenceSession; `run` is thread-safe in ONNX Runtime, so no lock is taken."""

    backend = "onnxruntime"

    def __init__(self, path: Path, metadata: Mapping[str, Any] | None = None, *, threads: int | None = None,
                 providers: Sequence[str] | None = None, optimization: str = "all", spinning: bool = True) -> None:
        super().__init__(path, metadata)
        if optimization not in _OPTIMIZATION:
            raise ValueError(f"optimization {optimization!r} unknown; known: {', '.join(_OPTIMIZATION)}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        data, info = check_onnx_file(self.path)
        ort = _import_ort()
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
        self.fallback_reason: str | None = None  # why the first provider asked for is not the one running
        if providers is None and self.metadata.get("providers"):  # the sidecar's; fall back to the CPU, warning
            named = self.metadata["providers"]
            self.requested_providers = [named] if isinstance(named, str) else [str(p) for p in named]
            wanted, self.fallback_reason = resolve_providers(self.requested_providers, available, ort.get_device(),
                                                             ort.__version__)
        else:  # an explicit argument wins, and every provider in it must exist
            wanted = list(providers or [CPU])
            self.requested_providers = list(wanted)
            missing = [p for p in wanted if p not in available]
            if missing:
                raise BackendMissing(f"ONNX Runtime provider(s) {missing} not available here; available: {available}")
        # Load the very bytes that were checked; a model with external weights must be loaded from its path.
        source = str(self.path) if info["external_data"] else data
        try:
            self._session = ort.InferenceSession(source, sess_options=opts, providers=wanted,
                                                 disabled_optimizers=disabled_optimizers(wanted))
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            raise ArtifactError(f"artifact {self.path} cannot be loaded by ONNX Runtime: {_first_line(e)}") from None
        del data
        self.providers = self._session.get_providers()  # what the session really uses, in order
        if self.fallback_reason is None and self.providers[0] != self.requested_providers[0]:
            # in the build, but it failed to start (no driver, a missing CUDA library): ONNX Runtime fell back
            self.fallback_reason = (f"{self.requested_providers[0]} could not be started by ONNX Runtime (no GPU, "
                                    f"driver or CUDA libraries?); running on {self.providers[0]}")
        if self.fallback_reason:
            import warnings

            warnings.warn(f"{self.path.name}: {self.fallback_reason}", ProviderFallbackWarning, stacklevel=3)
        self.inputs = tuple(self._spec(i) for i in self._session.get_inputs())
        self.outputs = tuple(self._spec(o) for o in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
        names = tuple(d if isinstance(d, str) else None for d in arg.shape)
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise ArtifactError(f"model tensor {arg.name!r} has type {arg.type}, which this runtime does not feed")
        return TensorSpec(arg.name, dims, np.dtype(dtype), names if any(names) else ())

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session
        if session is None:
            raise self._closed_error()
        try:
            return session.run(self._output_names, feeds)
        except Exception as e:
            raise RuntimeFailure(f"inference failed in ONNX Runtime: {_first_line(e)}") from None

    def run_raw(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """No validation: for benchmarks that measure the session itself."""
        return self._session.run(self._output_names, feeds)

    def bound_run(self, feeds: dict[str, np.ndarray], device: str | None = None):
        """A callable that runs the session on `feeds` through I/O binding: the inputs copied once to `device`
        ("cuda" when the session runs on CUDA, else "cpu"), the outputs left there. What a GPU bench times: the
        model, not a host-to-device copy per run. No validation."""
        ort = _import_ort()
        session = self._session
        if session is None:
            raise self._closed_error()
        device = device or ("cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu")
        binding = session.io_binding()
        on_device = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, 0) for v in feeds.values()]
        for name, value in zip(feeds, on_device):
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, device, 0)

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        run.inputs = on_device  # the device copies live as long as the callable
        run.outputs = binding.get_outputs
        return run

    def close(self) -> None:
        super().close()
        self._session = None
