"""Build a TensorRT engine from a (QDQ INT8) ONNX graph with the TensorRT 10 Python API.

Explicit quantization: the INT8 scales come from the Q/DQ nodes in the ONNX (no calibrator). Two modes:

- ``strongly_typed=True``: the network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
  every tensor's type follows from the graph (INT8 between Q/DQ pairs, FP32 elsewhere) and precision
  builder flags are not allowed (TensorRT rejects them). TensorRT 11 always builds this way.
- ``strongly_typed=False`` (default for "int8+fp16"): a weakly typed network with ``BuilderFlag.INT8``
  (Q/DQ layers run in INT8) and ``BuilderFlag.FP16`` (TensorRT may run the float layers in FP16). This is
  what ``trtexec --int8 --fp16`` does and what DLA needs on TensorRT 10.

Optimization profile for the dynamic batch (min / opt / max), a timing cache file reused across builds,
and a workspace limit through ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``. `tensorrt` is
imported only after `runtime.tensorrt_backend.cuda_status()` found a working driver.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from targets import TargetError

PRECISIONS = ("int8+fp16", "int8", "fp16", "fp32")


@dataclass(frozen=True)
class EngineConfig:
    precision: str = "int8+fp16"
    strongly_typed: bool = False
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 64
    workspace_mib: int = 1024
    dla_core: int | None = None  # a DLA core (Jetson); None: GPU only
    gpu_fallback: bool = True  # layers the DLA cannot run go to the GPU
    timing_cache: str | None = "timing.cache"  # file name in the output directory, or None
    builder_optimization_level: int | None = None  # 0..5; None: TensorRT's default (3)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TargetError(f"TensorRT precision {self.precision!r} unknown; known: {', '.join(PRECISIONS)}")
        if self.strongly_typed and self.precision in ("int8+fp16", "fp16"):
            raise TargetError(f"a strongly typed network takes its precision from the ONNX types; precision "
                              f"{self.precision!r} needs builder flags: use strongly_typed=False, or export an "
                              "FP16 graph and use precision 'int8' or 'fp32'")
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise TargetError(f"batch profile must satisfy 1 <= min <= opt <= max, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.workspace_mib < 1:
            raise TargetError(f"workspace_mib must be positive, got {self.workspace_mib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise TargetError(f"dla_core must be >= 0 or None, got {self.dla_core}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def installed() -> bool:
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def status() -> tuple[bool, str]:
    """Whether an engine can be built here: a working CUDA driver first, then the tensorrt package.

    Never imports tensorrt (its import alone is safe, but building without a driver has crashed)."""
    from runtime.tensorrt_backend import cuda_status

    ok, why = cuda_status()
    if not ok:
        return False, why
    if not installed():
        return False, ("TensorRT is not installed (pip install 'edge-compress[tensorrt]'; its wheels come from "
                       "NVIDIA's package index, unreachable from this machine)")
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("tensorrt")
    except PackageNotFoundError:
        v = "?"
    return True, f"TensorRT {v}; {why}"


def input_profiles(onnx_path: Path, config: EngineConfig) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shape per graph input: the batch axis from the config when it is dynamic, the rest fixed."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        if any(d < 0 for d in shape[1:]):
            raise TargetError(f"input {inp.name!r} of {Path(onnx_path).name} has dynamic non-batch dims {shape}; "
                              "only a dynamic batch is supported by this target")
        if shape and shape[0] < 0:
            out[inp.name] = {k: [b, *shape[1:]] for k, b in
                             (("min", config.min_batch), ("opt", config.opt_batch), ("max", config.max_batch))}
        else:
            out[inp.name] = {"min": shape, "opt": shape, "max": shape}
    return out


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    timing_cache: Path | None
    profiles: dict[str, dict[str, list[int]]]
    tensorrt_version: str
    layers: int


def build_engine(onnx_path: Path, engine_path: Path, config: EngineConfig = EngineConfig()) -> BuildResult:
    """Parse `onnx_path` and write a serialized engine to `engine_path` (atomically). The ONNX is not modified."""
    from runtime.tensorrt_backend import import_tensorrt

    try:
        trt = import_tensorrt()
    except Exception as e:  # BackendMissing: no driver / no tensorrt
        raise TargetError(str(e)) from None
    from common.atomic import atomic_path

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if int(trt.__version__.split(".")[0]) >= 11 and not config.strongly_typed:
        # TensorRT 11 builds strongly typed networks only; the FP16 / INT8 builder flags are gone
        if "fp16" in config.precision:
            raise TargetError(f"TensorRT {trt.__version__} builds strongly typed networks only: FP16 must come "
                              "from the ONNX types; use precision 'int8' (Q/DQ INT8, FP32 elsewhere) or "
                              "export an FP16 graph")
        config = replace(config, strongly_typed=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if config.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TargetError(f"TensorRT cannot parse {onnx_path.name}: {errors or 'no details'}")

    build = builder.create_builder_config()
    build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if config.builder_optimization_level is not None:
        build.builder_optimization_level = config.builder_optimization_level
    if not config.strongly_typed:
        if "int8" in config.precision:
            build.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales from the Q/DQ nodes
        if "fp16" in config.precision:
            build.set_flag(trt.BuilderFlag.FP16)
    if config.dla_core is not None:
        if builder.num_DLA_cores <= config.dla_core:
            raise TargetError(f"DLA core {config.dla_core} requested; this device has {builder.num_DLA_cores}")
        build.default_device_type = trt.DeviceType.DLA
        build.DLA_core = config.dla_core
        if config.gpu_fallback:
            build.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    profiles = input_profiles(onnx_path, config)
    profile = builder.create_optimization_profile()
    for name, shapes in profiles.items():
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    build.add_optimization_profile(profile)

    cache_path = engine_path.parent / config.timing_cache if config.timing_cache else None
    if cache_path is not None:
        previous = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = build.create_timing_cache(previous)
        build.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, build)
    if serialized is None:
        raise TargetError(f"TensorRT built no engine from {onnx_path.name} (see the TensorRT log above; "
                          f"if it mentions memory, raise workspace_mib above {config.workspace_mib})")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(build.get_timing_cache().serialize()))
    return BuildResult(engine_path, cache_path, profiles, trt.__version__, network.num_layers)


def trtexec_command(onnx: str, engine: str, profiles: dict[str, dict[str, list[int]]], config: EngineConfig,
                    *, trtexec: str = "trtexec") -> list[str]:
    """The same build as `build_engine`, as a trtexec command line (for devices without Python TensorRT)."""

    def shapes(kind: str) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in s[kind])}" for name, s in profiles.items())

    cmd = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}"]
    if config.strongly_typed:
        cmd.append("--stronglyTyped")
    else:
        cmd += [f"--{p}" for p in ("int8", "fp16") if p in config.precision]
    if config.dla_core is not None:
        cmd.append(f"--useDLACore={config.dla_core}")
        if config.gpu_fallback:
            cmd.append("--allowGPUFallback")
    if any(s["min"] != s["max"] for s in profiles.values()):
        cmd += [f"--minShapes={shapes('min')}", f"--optShapes={shapes('opt')}", f"--maxShapes={shapes('max')}"]
    if config.timing_cache:
        cmd.append(f"--timingCacheFile={config.timing_cache}")
    cmd.append(f"--memPoolSize=workspace:{config.workspace_mib}")  # MiB
    if config.builder_optimization_level is not None:
        cmd.append(f"--builderOptimizationLevel={config.builder_optimization_level}")
    return cmd


def reference_io(onnx_path: Path, check=None, *, samples: int = 64, seed: int = 0):
    """(inputs, outputs) to check a compiled artifact against: `check` (real samples, preferred) or seeded
    standard-normal inputs, run through ONNX Runtime on CPU on the same graph (itself checked against torch
    at export and against FP32 at quantization)."""
    import numpy as np

    from runtime import load

    with load(onnx_path) as ref:
        spec = ref.inputs[0]
        if check is not None:
            x = np.ascontiguousarray(np.asarray(check, dtype=spec.dtype)[:samples])
        else:
            shape = [samples] + [d if d is not None else 1 for d in spec.shape[1:]]
            x = np.random.default_rng(seed).standard_normal(shape).astype(spec.dtype)
        y = np.concatenate([next(iter(ref.infer(x[i : i + 16]).values())) for i in range(0, len(x), 16)])
    return x, y.astype(np.float32)


def compare(got, expected, bars=None):
    """The artifact's outputs `got` against the reference `expected` (`common.compare.compare`), held to `bars`
    (a `common.compare.Bars`; none by default)."""
    import numpy as np

    from common.compare import Bars
    from common.compare import compare as _compare

    return _compare(expected, np.asarray(got, dtype=np.float32), Bars() if bars is None else bars)
