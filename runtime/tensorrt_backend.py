"""TensorRT backend: a serialized engine (.engine / .plan) or a jetson bundle directory (manifest.json).

Imported only when such an artifact is loaded; `tensorrt` and `cuda-python` are imported inside the runner,
and only after `cuda_status()` found a working driver (without one, TensorRT's runtime can segfault the
process). Written to TensorRT 10's name-based I/O API: `num_io_tensors`, `get_tensor_name/mode/dtype/shape`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`. One lock serialises shape setting, copies and
execution on a runner (an execution context is not thread-safe).

`python -m runtime.tensorrt_backend BUNDLE_DIR` checks a built engine on the device against the reference
outputs stored in the bundle (reference.npz), with the tolerance in manifest.json; exit status 1 past it.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runtime.errors import ArtifactError, BackendMissing, RuntimeFailure
from runtime.runner import Runner, TensorSpec

OPTIONS = ("device",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MANIFEST = "manifest.json"
INSTALL = "pip install 'edge-compress-runtime[tensorrt]' (from a checkout: pip install './runtime[tensorrt]'; tensorrt, cuda-python; on Jetson, TensorRT comes with JetPack)"

_CUDA_PROBE = r"""
import ctypes, sys
try:
    lib = ctypes.CDLL("libcuda.so.1")
except OSError as e:
    print("no NVIDIA driver: libcuda.so.1 cannot be loaded (%s)" % e); sys.exit(2)
rc = lib.cuInit(0)
if rc != 0:
    print("the NVIDIA driver is present but cuInit failed with CUresult %d (no usable GPU, or driver and "
          "hardware do not match)" % rc); sys.exit(3)
n = ctypes.c_int(0)
rc = lib.cuDeviceGetCount(ctypes.byref(n))
if rc != 0 or n.value < 1:
    print("cuInit succeeded but no CUDA device is visible (CUresult %d, %d devices)" % (rc, n.value)); sys.exit(4)
v = ctypes.c_int(0)
lib.cuDriverGetVersion(ctypes.byref(v))
print("%d CUDA device(s), driver API %d.%d" % (n.value, v.value // 1000, v.value % 1000 // 10))
"""


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(usable, why): loads libcuda.so.1 and calls cuInit(0) in a child process.

    A child, so that this process neither crashes on a broken driver nor holds a CUDA context across a
    later fork. Cached for the life of the process.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", _CUDA_PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"CUDA probe could not run: {e}"
    text = proc.stdout.strip() or (proc.stderr.strip().splitlines() or [""])[-1]
    if proc.returncode == 0:
        return True, text
    if proc.returncode < 0:
        return False, f"CUDA probe crashed (signal {-proc.returncode}): the NVIDIA driver is broken"
    return False, text or f"CUDA probe failed (exit {proc.returncode})"


def import_tensorrt():
    """`tensorrt`, only after a working CUDA driver was found; BackendMissing otherwise."""
    ok, why = cuda_status()
    if not ok:
        raise BackendMissing(f"TensorRT needs a working CUDA driver: {why}")
    try:
        import tensorrt
    except ImportError:
        raise BackendMissing(f"TensorRT is not installed; {INSTALL}") from None
    return tensorrt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendMissing(f"cuda-python is not installed (device buffers for TensorRT); {INSTALL}") from None
    return cudart


def resolve_engine(path: Path) -> tuple[Path, dict[str, Any]]:
    """An engine file, or a bundle directory -> (engine file, manifest or {})."""
    path = Path(path)
    if path.is_dir():
        manifest_file = path / MANIFEST
        if not manifest_file.is_file():
            raise ArtifactError(f"{path} is a directory without {MANIFEST}: not a deploy bundle")
        try:
            manifest = json.loads(manifest_file.read_text())
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{manifest_file} is unreadable or not JSON: {e}") from None
        engine = path / manifest.get("engine", "model.engine")
        if not engine.is_file():
            raise ArtifactError(f"bundle {path} has no {engine.name} yet: run build_engine.sh on the device first")
        return engine, manifest
    if path.suffix.lower() not in ENGINE_SUFFIXES:
        raise ArtifactError(f"{path}: not a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}) or bundle directory")
    return path, {}


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: Path, metadata: Mapping[str, Any] | None = None, *, device: int = 0) -> None:
        engine_file, manifest = resolve_engine(Path(path))
        super().__init__(Path(path), {**manifest.get("metadata", {}), **(metadata or {})})
        self.manifest = manifest
        data = engine_file.read_bytes()
        if not data:
            raise ArtifactError(f"engine {engine_file} is empty (0 bytes)")
        trt = import_tensorrt()
        cudart = _import_cudart()
        self._trt, self._cudart = trt, cudart
        self._check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ArtifactError(f"engine {engine_file} cannot be deserialized: built by another TensorRT version "
                                "or for another GPU / DLA; rebuild it on this device")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RuntimeFailure(f"TensorRT could not create an execution context for {engine_file.name}")
        self._stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._output_names = [n for n in names if engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT]
        self.inputs = tuple(self._spec(n) for n in self._input_names)
        self.outputs = tuple(self._spec(n) for n in self._output_names)

    def _spec(self, name: str) -> TensorSpec:
        shape = tuple(int(d) if d >= 0 else None for d in self._engine.get_tensor_shape(name))
        dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
        return TensorSpec(name, shape, dtype)

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeFailure(f"{what} failed with CUDA error {int(err)} ({err})")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(self._check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            if self._context is None:
                raise self._closed_error()
            ctx = self._context
            for name in self._input_names:
                value = feeds[name]
                if not ctx.set_input_shape(name, value.shape):
                    raise RuntimeFailure(f"input {name!r} shape {list(value.shape)} is outside the engine's "
                                         "optimization profile (min/opt/max in manifest.json)")
                ptr = self._buffer(name, value.nbytes)
                self._check(cudart.cudaMemcpyAsync(ptr, value.ctypes.data, value.nbytes, h2d, self._stream),
                            "cudaMemcpyAsync")
                ctx.set_tensor_address(name, ptr)
            outs = []
            for name, spec in zip(self._output_names, self.outputs):
                out = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=spec.dtype)
                ctx.set_tensor_address(name, self._buffer(name, max(out.nbytes, 1)))
                outs.append(out)
            if not ctx.execute_async_v3(self._stream):
                raise RuntimeFailure("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            for name, out in zip(self._output_names, outs):
                self._check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h,
                                                   self._stream), "cudaMemcpyAsync")
            self._check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            return outs

    def close(self) -> None:
        super().close()
        with self._lock:
            if getattr(self, "_context", None) is None:
                return
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            self._buffers.clear()
            self._cudart.cudaStreamDestroy(self._stream)
            self._context = None
            self._engine = None


def check_bundle(bundle: Path) -> dict[str, Any]:
    """Run the bundle's engine on reference.npz; compare with the stored reference outputs."""
    bundle = Path(bundle)
    ref = np.load(bundle / "reference.npz")
    with TensorRTRunner(bundle) as r:
        name = r.inputs[0].name
        got = np.concatenate([next(iter(r.infer({name: ref["inputs"][i : i + 1]}).values()))
                              for i in range(len(ref["inputs"]))])
    expected = ref["outputs"]
    tol = r.manifest.get("check", {})
    result = {"samples": int(len(expected)),
              "max_abs_diff": float(np.abs(got.astype(np.float32) - expected).max()),
              "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
              "max_abs_diff_allowed": tol.get("max_abs_diff"), "min_agreement": tol.get("min_agreement")}
    result["ok"] = ((tol.get("max_abs_diff") is None or result["max_abs_diff"] <= tol["max_abs_diff"])
                    and result["top1_agreement"] >= tol.get("min_agreement", 0.0))
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runtime.tensorrt_backend BUNDLE_DIR", file=sys.stderr)
        return 2
    try:
        result = check_bundle(Path(args[0]))
    except RuntimeFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
