"""LiteRT (XNNPACK) candidates beside a target's own: a target that names a `SIBLING` (the cpu target: mobile's
LiteRT files run on the same CPU) gets the sibling's FP32, dynamic-range and full-integer INT8 files of the baseline
and the student, converted from torch at every bench batch size, timed in the same interleaved bench and held to
the same budget. Whether one may ship is `target.runtime`'s call (onnxruntime, litert or auto)."""
from __future__ import annotations

from compress.driver import log
from compress.shipping.budget import LITERT_PREFIX


def sibling_of(recipe, target, family):
    """(the sibling target module, "") or (None, why it is not used), for `target` and a `family` model."""
    from targets import get_target

    name = getattr(target, "SIBLING", None)
    if name is None:
        return None, f"target {recipe.target.name!r} times no other runtime"
    if not recipe.target.litert_candidates and recipe.target.runtime == "onnxruntime":
        return None, "target.litert_candidates is false"
    why = family.unsupported("litert")
    if why:
        return None, why
    other = get_target(name)
    if family.kind not in other.MODEL_KINDS:
        return None, f"{other.RUNTIME} does not take {family.kind} models"
    ok, why = other.available()
    return (other, "") if ok else (None, why)


def sibling(run):
    """The sibling target module this run times beside its own, or None (said in one line when it has one)."""
    if getattr(run.target, "SIBLING", None) is None:
        return None
    other, why = sibling_of(run.recipe, run.target, run.family)
    if other is None:
        log(f"[litert] LiteRT candidates skipped: {why}")
    return other


def conversions(run) -> list:
    """The sibling's candidates: baseline and student in FP32, both in the family's INT8 flavour, and for a
    static-INT8 family also the student's dynamic-range INT8."""
    from compress.shipping.torch_compile import Conversion, plan

    q = run.recipe.quantize
    rows = plan(run.student_name, run.fp32_checkpoints, q.mode if q.enabled else None)
    student = run.student_name
    if q.enabled and q.mode == "static" and student != "baseline":
        rows.append(Conversion(f"{student}-dynamic-int8", student, run.fp32_checkpoints[student], "dynamic-int8",
                               f"{run.family.described[student]} + dynamic-range INT8"))
    return rows


def enabled(run) -> bool:
    return sibling(run) is not None


def execute(run):
    """Convert (cached like every stage) and return the record, or None when the stage is off."""
    from compress.shipping.report import sidecar
    from compress.shipping.torch_compile import compile_stage

    other = sibling(run)
    if other is None:
        return None
    record = compile_stage(run, conversions(run), metadata=sidecar(run), target=other, stage="litert",
                           batches=tuple(run.recipe.bench.batch_sizes), folder="litert", optional=True)
    run.done["litert"] = record
    return record


def variants(run, record) -> list:
    import dataclasses

    from compress.shipping.torch_compile import variants as rows_of

    return [dataclasses.replace(v, description=f"{v.description}, on LiteRT")
            for v in rows_of(conversions(run), record, run.out_dir, prefix=LITERT_PREFIX)]
