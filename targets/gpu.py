"""`gpu` target: an NVIDIA GPU. TensorRT engine where TensorRT and a CUDA driver exist; else the ONNX graph
for ONNX Runtime's CUDA execution provider; else unavailable, saying why.

The engine is built from the QDQ ONNX (explicit INT8 from the Q/DQ nodes, FP16 for the float layers by
default), with a dynamic-batch optimization profile, a timing cache beside it and a workspace limit; see
targets/tensorrt.py. Either artifact is run on check inputs and compared with ONNX Runtime CPU on the same
graph before it is called done.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from targets import Artifact, TargetError, TargetSpec
from targets import tensorrt as trt_build

NAME = "gpu"
RUNTIME = "tensorrt"  # an artifact for ONNX Runtime's CUDA EP (no TensorRT here) says runtime "ort-cuda"
SOURCE = "onnx"
MODEL_KINDS = frozenset({"image"})  # one input: `check` is an array (tensorrt.reference_io)
BACKENDS = ("auto", "tensorrt", "ort-cuda")
OPTIONS = ("backend", "precision", "strongly_typed", "min_batch", "opt_batch", "max_batch", "workspace_mib",
           "builder_optimization_level", "min_agreement", "max_abs_diff", "check_samples")
# engine vs ONNX Runtime CPU on the same QDQ graph: INT8/FP16 kernels round differently, so logits move a little
DEFAULT_MIN_AGREEMENT = 0.97
# ONNX Runtime's providers for this target, in order: the sidecar of an "ort-cuda" artifact names them (runtime.load
# uses them, falling back to the CPU with a warning), and the bench times every candidate on them
PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
FP16_CANDIDATES = True  # the pipeline adds float16 copies (keep_io_types) of the baseline and the student


def ships_tensorrt(spec: TargetSpec) -> bool:
    """Whether `compile` will build a TensorRT engine here (then the Q/DQ graph ships whenever it meets the budget:
    TensorRT picks its kernels on the GPU, so no ONNX Runtime timing decides the precision)."""
    wanted = spec.options.get("backend", "auto")
    return wanted == "tensorrt" or (wanted == "auto" and backend()[0] == "tensorrt")


def latency_note(spec: TargetSpec) -> str | None:
    """What the report's latencies do not cover, or None when they are the artifact's own (ONNX Runtime CUDA)."""
    if not ships_tensorrt(spec):
        return None
    return ("these are ONNX Runtime's figures, not TensorRT's; engine latency: trtexec --loadEngine=model.engine "
            "on the GPU")


def _ort_cuda() -> tuple[bool, str]:
    try:
        import onnxruntime
    except ImportError:
        return False, "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False, (f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider "
                       "(install onnxruntime-gpu instead of onnxruntime)")
    from runtime.tensorrt_backend import cuda_status

    ok, why = cuda_status()
    if not ok:
        return False, f"onnxruntime has CUDAExecutionProvider but {why}"
    return True, f"onnxruntime {onnxruntime.__version__} CUDAExecutionProvider; {why}"


def backend() -> tuple[str | None, str]:
    """'tensorrt', 'ort-cuda' or None, and why."""
    ok, why_trt = trt_build.status()
    if ok:
        return "tensorrt", why_trt
    ok, why_ort = _ort_cuda()
    if ok:
        return "ort-cuda", f"no TensorRT ({why_trt}); using {why_ort}"
    return None, f"no TensorRT ({why_trt}) and no ONNX Runtime CUDA ({why_ort})"


def available() -> tuple[bool, str]:
    name, why = backend()
    return name is not None, why


def engine_config(options: dict[str, Any]) -> trt_build.EngineConfig:
    keys = ("precision", "strongly_typed", "min_batch", "opt_batch", "max_batch", "workspace_mib",
            "builder_optimization_level")
    return trt_build.EngineConfig(**{k: options[k] for k in keys if k in options})


def _options(spec: TargetSpec) -> dict[str, Any]:
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise TargetError(f"{spec.name} target: unknown option(s) {unknown}; known: {', '.join(OPTIONS)}")
    opts = {"backend": "auto", "min_agreement": DEFAULT_MIN_AGREEMENT, "max_abs_diff": None, "check_samples": 64,
            **spec.options}
    if opts["backend"] not in BACKENDS:
        raise TargetError(f"gpu backend {opts['backend']!r} unknown; known: {', '.join(BACKENDS)}")
    return opts


def compile(onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
            check=None) -> Artifact:
    """TensorRT engine (out_dir/model.engine) or ONNX for the CUDA EP (out_dir/model.onnx); `check`: real
    input samples to compare on (default: seeded random inputs)."""
    from common.atomic import atomic_path, write_json
    from runtime import load, sidecar_path

    opts = _options(spec)
    config = engine_config(opts)  # validates the engine options even when the CUDA EP is used
    chosen, why = backend()
    if opts["backend"] != "auto" and chosen != opts["backend"]:
        if opts["backend"] == "ort-cuda" and _ort_cuda()[0]:
            chosen = "ort-cuda"
        else:
            raise TargetError(f"gpu backend {opts['backend']!r} is not usable here: {why}")
    if chosen is None:
        raise TargetError(f"target {spec.name!r} cannot be built here: {why}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, expected = trt_build.reference_io(onnx_path, check, samples=opts["check_samples"])
    meta = {**metadata, "target": spec.name, "runtime": chosen, "why": why}

    if chosen == "tensorrt":
        from runtime.tensorrt_backend import TensorRTRunner

        result = trt_build.build_engine(onnx_path, out_dir / "model.engine", config)
        with TensorRTRunner(result.engine) as runner:
            name = runner.inputs[0].name
            got = [next(iter(runner.infer({name: x[i : i + config.opt_batch]}).values()))
                   for i in range(0, len(x), config.opt_batch)]
        parity = trt_build.compare(_concat(got), expected, _bars(opts))
        meta.update({"engine": config.to_dict(), "profiles": result.profiles,
                     "tensorrt_version": result.tensorrt_version})
        path, files = result.engine, [result.engine] + ([result.timing_cache] if result.timing_cache else [])
    else:
        path = out_dir / "model.onnx"
        providers = list(PROVIDERS)
        with atomic_path(path) as tmp:
            shutil.copyfile(onnx_path, tmp)
        with load(path, providers=providers) as runner:
            if runner.providers[0] != providers[0]:  # in the build, but ONNX Runtime could not start it
                path.unlink(missing_ok=True)
                raise TargetError(f"gpu target: {runner.fallback_reason}; the check would run on the CPU, not shipped")
            got = [next(iter(runner.infer(x[i : i + 16]).values())) for i in range(0, len(x), 16)]
        parity = trt_build.compare(_concat(got), expected, _bars(opts))
        meta.update({"providers": providers})
        files = [path]
    _gate(parity, opts, path)
    meta["parity_vs_onnx_cpu"] = parity.to_dict()
    write_json(sidecar_path(path), meta)
    return Artifact(path, spec.name, chosen, meta, files=tuple(files) + (sidecar_path(path),))


def _concat(chunks):
    import numpy as np

    return np.concatenate(chunks)


def _bars(opts: dict[str, Any]):
    from common.compare import Bars

    return Bars(atol=opts["max_abs_diff"], min_agreement=opts["min_agreement"])


def _gate(parity, opts: dict[str, Any], path: Path) -> None:
    """`parity`: a `common.compare.Comparison` held to `_bars(opts)`; removes the artifact on a miss."""
    if not parity.ok:
        path.unlink(missing_ok=True)
        raise TargetError(f"{path.name} differs from ONNX Runtime CPU on the same graph: top-1 agreement "
                          f"{parity.top1_agreement:.4f} (need >= {opts['min_agreement']}), max abs diff "
                          f"{parity.max_abs_diff:.3g} on {parity.samples} samples; not shipped")
