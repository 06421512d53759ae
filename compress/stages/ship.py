"""The tail of every run: bench the candidates, compile the fastest one within the run's accuracy budget for the
target, write the reports. Targets that compile from an ONNX graph take the exported and INT8 files; those that
convert the torch module themselves (mobile) convert each candidate first (compress.shipping.torch_compile)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.shipping.budget import LITERT_PREFIX
from compress.shipping.report import sidecar


def finish(run) -> dict[str, Any]:
    from compress.shipping.compile import compile_stage, onnx_candidates, ships_tensorrt
    from compress.shipping.report import finish_report
    from compress.stages import litert
    from compress.shipping.torch_compile import ship_stage

    if run.target.SOURCE == "torch":
        from compress.shipping.torch_compile import run_torch_target

        return run_torch_target(run, sidecar(run))
    family = run.family
    onnx = {name: run.artifacts[f"onnx:{name}"] for name in run.fp32_checkpoints}
    quantized = "quantize" in run.done
    int8 = {name: run.artifacts[f"int8:{name}"] for name in ("int8", "compressed")
            if quantized and f"int8:{name}" in run.artifacts}
    fp16, fp16_info = fp16_candidates(run, onnx) if not ships_tensorrt(run) else ({}, {})
    variants = onnx_candidates(onnx, int8, run.student_name, family.int8_kind, family.described, fp16)
    sources = {v.name: v.path for v in variants}
    upstream = run.keys["quantize" if quantized else "export"]

    litert_rec = litert.execute(run)
    extra = {"fp16": fp16_info} if fp16_info else {}
    if litert_rec is not None:
        variants += litert.variants(run, litert_rec)
        extra["litert"] = {k: litert_rec.metrics[k] for k in ("parity", "ops", "per_batch", "skipped")
                           if k in litert_rec.metrics}

    def ship(name: str, batch: str) -> Path:
        if name.startswith(LITERT_PREFIX):
            return ship_stage(run, litert_rec, name[len(LITERT_PREFIX):], batch)
        path = compile_stage(run, sources[name], sidecar(run), upstream_key=upstream, check=family.check_inputs(run),
                             write_extra=family.extra_files(run))
        return path / "model.onnx" if path.is_dir() else path  # a jetson bundle: the graph it builds from

    return finish_report(run, variants, run.done["export"].metrics["parity"],
                         run.done["quantize"].metrics if quantized else {}, ship, extra)


def fp16_candidates(run, onnx: dict[str, Path]) -> tuple[dict[str, Path], dict[str, Any]]:
    """For a target that runs float16 well (a GPU: `FP16_CANDIDATES`), float16 copies of the FP32 baseline and
    student, each checked against its source on the family's check rows; a TensorRT target builds FP16 itself."""
    if not getattr(run.target, "FP16_CANDIDATES", False):
        return {}, {}
    from compress.quantization.fp16 import candidates

    names = [n for n in ("baseline", run.student_name) if n in onnx]
    return candidates({n: onnx[n] for n in names}, run.family.check_inputs(run))
