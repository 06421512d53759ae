"""`jetson` target: a deploy bundle that builds its TensorRT engine on the device.

A TensorRT engine is specific to the GPU / DLA and the TensorRT version it was built with, so the engine
for a Jetson is built on that Jetson. The bundle directory holds:

    model.onnx        the QDQ INT8 graph (explicit quantization: TensorRT takes the scales from Q/DQ); when the
                      run's budget let no INT8 graph ship, the FP32 one (built with --fp16 only)
    manifest.json     preset, precision, what model.onnx holds (its Q/DQ node count), input shapes and profiles,
                      source sha256, toolkit version, expected accuracy, the parity tolerance for the on-device check
    build_engine.sh   trtexec with the preset's flags (INT8+FP16, DLA core + GPU fallback, min/opt/max
                      shapes, timing cache, workspace limit) -> model.engine
    reference.npz     check inputs and the outputs ONNX Runtime CPU gives on model.onnx
    README.txt        the three steps on the device
    model.onnx.meta.json  labels and preprocessing (runtime.load reads it; also for the engine)

Where TensorRT and a CUDA driver exist locally (a Jetson itself, or a dev box with the same TensorRT),
`compile` builds model.engine right away with the Python API and checks it against reference.npz.
"""
from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from targets import Artifact, TargetError, TargetSpec
from targets import tensorrt as trt_build


NAME = "jetson"
RUNTIME = "tensorrt"
SOURCE = "onnx"
MODEL_KINDS = frozenset({"image"})  # one input: `check` is an array (tensorrt.reference_io)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    precision: str
    dla_core: int | None
    gpu_fallback: bool
    workspace_mib: int
    jetpack: str


PRESETS = {
    "orin": Preset("orin", "Jetson AGX Orin / Orin NX: GPU + 2 DLA cores", "int8+fp16", 0, True, 2048,
                   "JetPack 6 (TensorRT 10.3); JetPack 5.1 (TensorRT 8.5) works with the same flags"),
    "xavier": Preset("xavier", "Jetson AGX Xavier / Xavier NX: GPU + 2 DLA cores", "int8+fp16", 0, True, 1024,
                     "JetPack 5.1 (TensorRT 8.5)"),
    "orin-nano": Preset("orin-nano", "Jetson Orin Nano: GPU only, no DLA", "int8+fp16", None, False, 1024,
                        "JetPack 6 (TensorRT 10.3)"),
}
OPTIONS = ("preset", "min_batch", "opt_batch", "max_batch", "workspace_mib", "dla_core", "check_samples",
           "min_agreement", "max_abs_diff")
DEFAULTS = {"preset": "orin", "min_batch": 1, "opt_batch": 1, "max_batch": 8, "check_samples": 64,
            "min_agreement": 0.97, "max_abs_diff": None}
FILES = ("model.onnx", "manifest.json", "build_engine.sh", "reference.npz", "README.txt", "model.onnx.meta.json")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
NO_QDQ = "none (FP32 graph; TensorRT --fp16 builds float layers in FP16)"
# what the pipeline's report says about its latencies for this target (compress.shipping.budget reads it)
LATENCY_NOTE = "device latency: run build_engine.sh and trtexec on the Jetson (the host's figures say nothing of it)"


def ships_tensorrt(spec: TargetSpec) -> bool:
    """Always: the engine is built by TensorRT on the device, so the Q/DQ graph ships whenever it meets the budget."""
    return True


def latency_note(spec: TargetSpec) -> str:
    return LATENCY_NOTE


def count_qdq(onnx_path: Path) -> int:
    """QuantizeLinear + DequantizeLinear nodes in the graph (subgraphs included): what explicit INT8 rests on."""
    import onnx

    def count(graph) -> int:
        n = 0
        for node in graph.node:
            n += node.op_type in QDQ_OPS
            for attr in node.attribute:
                n += sum(count(g) for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs))
        return n

    return count(onnx.load(str(onnx_path), load_external_data=False).graph)


def quantization(qdq_nodes: int) -> str:
    """The manifest's `quantization`: what model.onnx really holds."""
    return f"explicit ({qdq_nodes} Q/DQ nodes)" if qdq_nodes else NO_QDQ


def available() -> tuple[bool, str]:
    ok, why = trt_build.status()
    if ok:
        return True, f"writes a deploy bundle and builds its engine here too ({why})"
    return True, ("writes a deploy bundle (ONNX + manifest + build_engine.sh); the engine is built on the "
                  f"device with trtexec (not here: {why})")


def _options(spec: TargetSpec) -> tuple[dict[str, Any], Preset, trt_build.EngineConfig]:
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise TargetError(f"jetson target: unknown option(s) {unknown}; known: {', '.join(OPTIONS)}")
    opts = {**DEFAULTS, **spec.options}
    if opts["preset"] not in PRESETS:
        raise TargetError(f"jetson preset {opts['preset']!r} unknown; known: {', '.join(PRESETS)}")
    preset = PRESETS[opts["preset"]]
    dla = opts.get("dla_core", preset.dla_core)
    if dla is not None and preset.dla_core is None:
        raise TargetError(f"jetson preset {preset.name!r} has no DLA ({preset.description}); drop dla_core")
    config = trt_build.EngineConfig(
        precision=preset.precision, strongly_typed=False, min_batch=opts["min_batch"], opt_batch=opts["opt_batch"],
        max_batch=opts["max_batch"], workspace_mib=opts.get("workspace_mib", preset.workspace_mib), dla_core=dla,
        gpu_fallback=preset.gpu_fallback, timing_cache="timing.cache")
    return opts, preset, config


def sha256(path: Path) -> str:
    from common.digest import file_digest

    return file_digest(path)


def build_script(profiles: dict[str, dict[str, list[int]]], config: trt_build.EngineConfig) -> str:
    cmd = trt_build.trtexec_command("model.onnx", "model.engine", profiles, config, trtexec='"$TRTEXEC"')
    args = " \\\n  ".join(a if a.startswith('"$') else shlex.quote(a) for a in cmd)
    return f"""#!/bin/sh
# Builds model.engine from model.onnx on this Jetson (an engine only runs on the device and TensorRT
# version it was built with). Extra trtexec flags pass through: ./build_engine.sh --verbose
set -eu
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "trtexec not found (set TRTEXEC=/path/to/trtexec; JetPack installs it in /usr/src/tensorrt/bin)" >&2
  exit 127
fi
{args} \\
  "$@"
echo "built $(pwd)/model.engine; check it: python3 -m runtime.tensorrt_backend $(pwd)"
"""


def readme(preset: Preset, manifest: dict[str, Any]) -> str:
    acc = manifest.get("expected_accuracy")
    return f"""Deploy bundle for {preset.description} ({preset.name})
Made by {manifest['toolkit']} from {manifest['source']['name']} (sha256 {manifest['source']['sha256'][:16]}...).
Expected on {preset.jetpack}.

1. Copy this folder to the Jetson.
2. ./build_engine.sh            -> model.engine (and timing.cache, which makes rebuilds faster)
   precision {manifest['precision']}, DLA core {manifest['dla_core'] if manifest['dla_core'] is not None else 'none'}\
{' with GPU fallback' if manifest['gpu_fallback'] else ''}, batch {manifest['batch']['min']}..{manifest['batch']['max']} \
(optimised for {manifest['batch']['opt']})
3. python3 -m runtime.tensorrt_backend .   (needs the edge-compress runtime, tensorrt and cuda-python)
   runs model.engine on reference.npz and compares it with ONNX Runtime's outputs on model.onnx:
   top-1 agreement >= {manifest['check']['min_agreement']}; exit status 1 otherwise.
In an app: runtime.load("<this folder>") gives a runner with infer() / predict().
{'Expected accuracy (from the toolkit run): ' + json.dumps(acc) if acc else ''}
"""


def compile(onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
            check=None) -> Artifact:
    """Write the bundle to `out_dir` (a fresh directory each time); build the engine too where possible."""
    from common.atomic import atomic_path, write_json, write_text
    from common.version import __version__
    import numpy as np
    from runtime import sidecar_path

    opts, preset, config = _options(spec)
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    if out_dir.exists():
        for name in FILES + ("model.engine", "timing.cache"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / "model.onnx"
    with atomic_path(model) as tmp:
        shutil.copyfile(onnx_path, tmp)
    qdq = count_qdq(model)
    if not qdq and "int8" in config.precision:  # --int8 without Q/DQ scales: trtexec would invent placeholder ones
        config = replace(config, precision="fp16")
    profiles = trt_build.input_profiles(model, config)
    x, y = trt_build.reference_io(model, check, samples=opts["check_samples"])  # also proves ORT opens it
    with atomic_path(out_dir / "reference.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, inputs=x, outputs=y)
    manifest = {
        "format": "edge-compress jetson bundle 1",
        "preset": preset.name, "device": preset.description, "jetpack": preset.jetpack,
        "precision": config.precision, "quantization": quantization(qdq), "qdq_nodes": qdq,
        "dla_core": config.dla_core, "gpu_fallback": config.gpu_fallback, "workspace_mib": config.workspace_mib,
        "inputs": profiles, "batch": {"min": config.min_batch, "opt": config.opt_batch, "max": config.max_batch},
        "onnx": "model.onnx", "engine": "model.engine", "timing_cache": config.timing_cache,
        "source": {"name": onnx_path.name, "sha256": sha256(onnx_path), "bytes": onnx_path.stat().st_size},
        "toolkit": f"edge-compress {__version__}",
        "expected_accuracy": metadata.get("expected_accuracy"),
        "check": {"reference": "reference.npz", "min_agreement": opts["min_agreement"],
                  "max_abs_diff": opts["max_abs_diff"], "samples": int(len(x))},
        "trtexec": trt_build.trtexec_command("model.onnx", "model.engine", profiles, config),
        "metadata": {k: v for k, v in metadata.items() if k in ("labels", "preprocess", "dataset", "recipe")},
        "engine_built": None,
    }
    meta = {**metadata, "target": spec.name, "runtime": "tensorrt", "preset": preset.name}
    write_json(sidecar_path(model), meta)  # runtime.load(bundle/model.onnx) on ORT finds labels/preprocess
    write_text(out_dir / "README.txt", readme(preset, manifest))
    script = out_dir / "build_engine.sh"
    write_text(script, build_script(profiles, config))
    script.chmod(0o755)

    files = [out_dir / name for name in FILES]
    ok, why = trt_build.status()
    if ok:  # a Jetson (or a machine with the same TensorRT): build and check now
        result = trt_build.build_engine(model, out_dir / "model.engine", config)
        write_json(out_dir / "manifest.json", {**manifest, "engine_built": {"here": True, "tensorrt": result.tensorrt_version}})
        from runtime.tensorrt_backend import check_bundle

        parity = check_bundle(out_dir)
        if not parity["ok"]:
            raise TargetError(f"engine built here differs from ONNX Runtime: {parity}; not shipped")
        manifest["engine_built"] = {"here": True, "tensorrt": result.tensorrt_version, "parity": parity}
        files += [result.engine] + ([result.timing_cache] if result.timing_cache else [])
    else:
        manifest["engine_built"] = {"here": False, "why": why}
    write_json(out_dir / "manifest.json", manifest)
    meta["manifest"] = manifest
    return Artifact(out_dir, spec.name, "tensorrt", meta, files=tuple(files))
