"""The compile and bench stages for targets that convert from the torch module (`mobile`: litert-torch -> .tflite).

The ONNX targets compile the shipped INT8 ONNX; these convert each checkpoint themselves (their INT8 comes from
the converter's own quantizer, calibrated on the same samples as the CPU path). The report compares on the
target's own runtime: the baseline is the full model's FP32 .tflite, benched beside the INT8 ones in one run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.cache import StageRecord
from compress.driver import log, plain
from common.errors import CompressError, GateFailed

PRECISION_BY_MODE = {"static": "int8", "dynamic": "dynamic-int8"}


@dataclass(frozen=True)
class Conversion:
    variant: str  # the report's row name
    source: str  # the model it converts: baseline, pruned or distilled
    checkpoint: Path
    precision: str
    description: str


def plan(student_name: str, checkpoints: dict[str, Path], quantize_mode: str | None) -> list[Conversion]:
    """The candidates to convert: the baseline and the student in FP32, and both in INT8 when quantization is on
    (`quantize_mode` is the recipe's quantize.mode, or None). Which of them ships is the run's budget's choice."""
    described = {"distilled": "pruned + distilled", "pruned": "pruned + fine-tuned", "baseline": "baseline"}
    student = checkpoints[student_name]
    rows = [Conversion("baseline", "baseline", checkpoints["baseline"], "fp32", "uncompressed FP32 baseline")]
    if student_name != "baseline":
        rows.append(Conversion(student_name, student_name, student, "fp32", described[student_name]))
    if quantize_mode is None:
        return rows
    try:
        precision = PRECISION_BY_MODE[quantize_mode]
    except KeyError:
        raise CompressError(f"quantize.mode {quantize_mode!r} has no TFLite form; known: "
                            f"{', '.join(PRECISION_BY_MODE)}") from None
    rows.append(Conversion("int8", "baseline", checkpoints["baseline"], precision, f"baseline, {precision} only"))
    if student_name != "baseline":
        rows.append(Conversion(f"{student_name}-int8", student_name, student, precision,
                               f"{described[student_name]} + {precision}"))
    return rows


def compile_stage(run, conversions: list[Conversion], *, metadata: dict[str, Any], target=None,
                  stage: str = "compile", batches: tuple[int, ...] = (1,), folder: str | None = None,
                  optional: bool = False) -> StageRecord:
    """Convert every checkpoint in `conversions` (with `target`, default the run's) at each of `batches`, each
    file checked against its torch model on the family's check rows before it is kept; the family's extra files (a
    tokenizer) go beside them. The record's `artifacts` holds each variant's file at the first batch, `per_batch`
    all of them; they go to `folder` of the run directory (default: target/<target>/). `optional`: candidates beside
    the target's own, so a conversion that fails or misses its bar is left out with one line (`skipped`) instead of
    failing the run."""
    from targets import TargetError, TargetSpec

    recipe, family = run.recipe, run.family
    target = target or run.target
    calib, check = family.torch_inputs(run)
    write_extra = family.extra_files(run)
    spec = TargetSpec(recipe.target.name, threads=recipe.bench.threads, options={"calib_samples": len(_first(calib))})
    inputs = (run.keys["distill"], run.keys["train"], run.student_name, recipe.target.parity_atol, recipe.quantize,
              run.data.fingerprint, spec.options, [(c.variant, c.checkpoint.name, c.precision) for c in conversions],
              batches)
    target_dir = run.out_dir / (folder or f"target/{recipe.target.name}")

    def convert(c: Conversion, model, batch: int) -> tuple[Any, str]:
        fp32_bar = {"max_abs_diff": recipe.target.parity_atol} if c.precision == "fp32" else {}
        options = {**spec.options, "precision": c.precision, "batch": batch, **fp32_bar}
        name = f"{c.source}.{c.precision}" + (f".b{batch}" if len(batches) > 1 else "")
        try:
            return target.compile_module(model, TargetSpec(spec.name, threads=spec.threads, options=options),
                                         target_dir, metadata, calib=calib, check=check, name=name)
        except TargetError as e:
            raise GateFailed(f"[{stage}] {c.variant}: {e}") from None

    def body():
        from runtime import sidecar_path

        files, parity, ops, per_batch, skipped = [], {}, {}, {}, {}
        for c in conversions:
            model = family.load(run, c.checkpoint).eval()
            try:
                made = [convert(c, model, batch) for batch in batches]
            except GateFailed as e:
                if not optional:
                    raise
                skipped[c.variant] = str(e)
                log(f"  {e} (left out)")
                continue
            for batch, artifact in zip(batches, made):
                files += [artifact.path, sidecar_path(artifact.path)]
                per_batch.setdefault(c.variant, {})[str(batch)] = str(artifact.path.relative_to(run.out_dir))
            parity[c.variant], ops[c.variant] = made[0].metadata["parity_vs_torch"], made[0].metadata["ops"]
        if write_extra is not None:
            files += write_extra(target_dir)
        artifacts = {variant: next(iter(paths.values())) for variant, paths in per_batch.items()}
        return files, {"artifacts": artifacts, "per_batch": per_batch, "runtime": target.RUNTIME, "parity": parity,
                       "ops": ops, **({"skipped": skipped} if skipped else {})}

    return run.cached(stage, tuple(plain(i) for i in inputs), body)


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def variants(conversions: list[Conversion], compile_rec: StageRecord, out_dir: Path, prefix: str = "") -> list:
    """The report's rows for the converted files (`prefix` + variant name); files converted at several batch sizes
    are timed each at its own."""
    from bench.variants import Variant

    out = []
    for c in conversions:
        if c.variant not in compile_rec.metrics["per_batch"]:  # left out: it missed its bar
            continue
        files = {int(b): out_dir / path for b, path in compile_rec.metrics["per_batch"][c.variant].items()}
        out.append(Variant(prefix + c.variant, next(iter(files.values())), c.precision, c.description,
                           per_batch=files if len(files) > 1 else None))
    return out


def quantize_section(conversions: list[Conversion], compile_rec: StageRecord) -> dict[str, Any]:
    """report.json's `quantize`, shaped as for the ONNX targets: per INT8 variant, its source and its ops
    (here the .tflite's op list, with the ops that stayed float or run hybrid)."""
    ops = compile_rec.metrics["ops"]
    return {"int8" if c.source == "baseline" else "compressed": {"source": c.source, "precision": c.precision,
                                                                  "ops": ops[c.variant]}
            for c in conversions if c.precision != "fp32"}


def ship_stage(run, compile_rec: StageRecord, variant: str, batch: str | None = None) -> Path:
    """The chosen candidate's file (at `batch`, for files converted per batch size), copied with its sidecar to
    `target/<target>/model.tflite`, where an app finds the shipped model whichever candidate it is, with the
    family's extra files (a tokenizer) beside it."""
    import shutil

    from common.atomic import atomic_path
    from runtime import sidecar_path

    per_batch = compile_rec.metrics["per_batch"][variant]
    source = run.out_dir / per_batch.get(batch, compile_rec.metrics["artifacts"][variant])
    target_dir = run.out_dir / "target" / run.recipe.target.name
    shipped = target_dir / f"model{source.suffix}"
    write_extra = run.family.extra_files(run)

    def body():
        for src, dst in ((source, shipped), (sidecar_path(source), sidecar_path(shipped))):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        extra = write_extra(target_dir) if write_extra is not None else []
        return [shipped, sidecar_path(shipped), *extra], {"artifact": str(shipped.relative_to(run.out_dir)),
                                                          "shipped_from": variant}

    return run.out_dir / run.cached("ship", (compile_rec.key, variant, source.name), body).metrics["artifact"]


def run_torch_target(run, metadata: dict[str, Any]):
    """Convert the candidates (`plan`), bench them on the target's runtime, ship the one the budget picks and write
    the reports: the whole tail of a run for a target that converts from torch."""
    from compress.shipping.report import finish_report

    q = run.recipe.quantize
    conversions = plan(run.student_name, run.fp32_checkpoints, q.mode if q.enabled else None)
    compile_rec = compile_stage(run, conversions, metadata=metadata)
    return finish_report(run, variants(conversions, compile_rec, run.out_dir), compile_rec.metrics["parity"],
                         quantize_section(conversions, compile_rec), lambda name, batch: ship_stage(run, compile_rec, name))
