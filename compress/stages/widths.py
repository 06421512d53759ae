"""`prune.ratio: auto`: time every candidate width on ONNX Runtime in one interleaved run, train the fastest widths'
students until one is within the allowance, and hand its ratio to the prune stage (compress.pruning.width_search). The curve lands
in widths.json, report.json's `width_search` and report.html."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from common.errors import CompressError
from compress.driver import WORKDIR_PREFIX, Stage, log

TIMED_ON = "ONNX Runtime on the build host CPU (the cpu target's runtime; GPU and mobile targets: a proxy)"


def outputs(run):
    return {"widths": run.path("widths.json")}


def enabled(run) -> bool:
    return searches(run.recipe) and not run.family.unsupported("prune")  # the prune stage says why it skips


def searches(recipe) -> bool:
    return recipe.prune.enabled and recipe.prune.auto


def check_recipe(recipe, family) -> None:
    """Before any work (one-line RecipeError): the family can search widths, and a width has a student to judge."""
    from compress.families.base import ModelFamily
    from compress.recipe import RecipeError

    if not searches(recipe) or family.unsupported("prune"):
        return
    if type(family).pruned_at is ModelFamily.pruned_at or type(family).train_width is ModelFamily.train_width:
        raise RecipeError(f"prune.ratio auto: {family.name} models do not search pruning widths in this version; "
                          "give prune.ratio a number")
    if not (recipe.distill.enabled and not family.unsupported("distill")) and recipe.prune.finetune_epochs <= 0:
        raise RecipeError("prune.ratio auto judges each width by its trained student: it needs distill.enabled or "
                          "prune.finetune_epochs > 0")


def refuse_under_torchrun(recipe, world_size: int | None = None) -> None:
    """Before any training: the search times and trains on one process."""
    from compress.training import distributed

    if searches(recipe) and (world_size or distributed.world_size()) > 1:
        raise CompressError("prune.ratio auto times and distils its candidate widths in one process; run it without "
                            "torchrun (--nproc 1), or give prune.ratio a number")


def allowance(recipe, int8_slower: bool = False) -> float:
    """The validation drop (pt) a width's better student may show: prune.auto_max_drop, or what the budget leaves
    after INT8's share. A width whose plain INT8 file was timed slower than its FP32 one (its form is fp32) may use
    the whole budget: the budget ships the fastest file within it, so an INT8 student outside it leaves the FP32
    student, at least as fast as timed here, which spends none of INT8's share. On EfficientNet-Lite0 at 96 px with
    depth pruning the 0.625 width's INT8 file ran 0.3825 ms against FP32's 0.3409."""
    if recipe.prune.auto_max_drop is not None:
        return recipe.prune.auto_max_drop
    q = recipe.quantize
    share = q.max_accuracy_drop if q.enabled and not int8_slower else 0.0
    return max(0.0, recipe.budget.max_accuracy_drop - share)


def decision_batch(recipe) -> int:
    """The batch the budget decides "fastest" at: budget.latency_batch when benched, else the first bench batch."""
    wanted = recipe.budget.latency_batch
    return wanted if wanted in recipe.bench.batch_sizes else recipe.bench.batch_sizes[0]


def ships_int8(recipe) -> bool:
    return recipe.quantize.enabled and recipe.quantize.mode == "static"


def body(run, out) -> dict:
    from common.atomic import write_json
    from compress.pruning import width_search as ws

    p, family, epochs = run.recipe.prune, run.family, run.recipe.prune.auto_epochs
    baseline_acc = run.done["train"].metrics["val_accuracy"]  # run.teacher's, on the rows train_width scores
    models = {r: family.pruned_at(run, r) for r in sorted(set(p.auto_ratios))}  # logs what each keeps whole
    dropped = dropped_blocks(next(iter(models.values())))
    if dropped:
        log(f"[widths] every width drops {len(dropped)} block(s) first (prune.blocks {p.blocks:g}): "
            + ", ".join(dropped))
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=run.out_dir) as work:
        points, baseline_p50 = timed_points(run, models, Path(work))
    dominated = ws.slower_than_a_wider(points)
    seen, students = {pt.ratio: pt for pt in points}, {}
    for pt in ws.training_order(points):
        log(f"[widths] ratio {pt.ratio:g}: {pt.speedup:.2f}x, training its students")
        scores, students[pt.ratio] = family.train_width(run, models[pt.ratio], epochs)
        seen[pt.ratio] = ws.judged(pt, scores, baseline_acc)
        log(f"[widths] ratio {pt.ratio:g}: the {seen[pt.ratio].student} student {seen[pt.ratio].drop_pt:.2f} pt below "
            f"the unpruned model on validation ({seen[pt.ratio].verdict}, {pt.allowance_pt:g} pt"
            + (", all the budget: its INT8 was slower than its FP32" if pt.allowance_pt != allowance(run.recipe)
               else "") + ")")
        if seen[pt.ratio].verdict == ws.WITHIN:
            break
    chosen = ws.pick(list(seen.values()))
    if epochs is None and p.iterative_steps == 1:  # the stages would train these very students again
        run.handoff["widths"] = {"ratio": chosen.ratio, "students": students.get(chosen.ratio, {})}
    if chosen.verdict != ws.WITHIN:
        log(f"[widths] no width within its allowance; going on with the most accurate, ratio {chosen.ratio:g} "
            f"(the budget still judges what ships)")
    result = {
        "version": ws.CURVE_VERSION, "chosen_ratio": chosen.ratio, "allowance_pt": chosen.allowance_pt,
        "epochs": epochs, "blocks_dropped": dropped, "baseline_val_accuracy": baseline_acc,
        "batch": decision_batch(run.recipe), "baseline_p50_ms": baseline_p50, "timed_on": TIMED_ON,
        "rule": f"the fastest width whose better student (fine-tuned or distilled, as the pipeline picks) is "
                f"within the allowance; widths no faster than a wider one (within {100 * ws.NOISE:g} %) are not "
                f"trained",
        "curve": [pt.to_dict() for pt in ws.final_curve(list(seen.values()), chosen, dominated)],
    }
    write_json(out["widths"], result)
    return result


def dropped_blocks(model) -> list[str]:
    """The blocks prune.blocks dropped from `model` (its pruning plan's record)."""
    from compress.pruning.structured import PLAN_ATTR

    return list(getattr(model, PLAN_ATTR, {}).get("dropped_blocks", []))


def timed_points(run, models: dict, work: Path) -> tuple[list, float]:
    """Each width exported (and, when the recipe quantizes statically, plain-PTQ INT8 with its settings), then every
    file and the unpruned FP32 model timed in one interleaved run at the decision batch with the bench section's
    warmup / runs / rounds; the points and the unpruned model's p50."""
    from bench.accuracy import latency_feeds
    from compress.pruning.structured import count_params
    from compress.quantization.candidates import latencies
    from compress.quantization.static import quantize_static_qdq

    recipe, data = run.recipe, run.data
    paths = {"baseline": work / "baseline.onnx"}
    run.family.export(run, run.teacher, paths["baseline"])
    for ratio, model in models.items():
        paths[f"{ratio}-fp32"] = work / f"width-{ratio}.onnx"
        run.family.export(run, model, paths[f"{ratio}-fp32"])
        if ships_int8(recipe):
            paths[f"{ratio}-int8"] = work / f"width-{ratio}.int8.onnx"
            quantize_static_qdq(paths[f"{ratio}-fp32"], paths[f"{ratio}-int8"], data.calib.x, recipe.quantize)
    batch = decision_batch(recipe)
    log(f"[widths] timing {len(models)} widths at batch {batch}, interleaved")
    b = recipe.bench  # the final bench's settings: sub-millisecond widths moved 10-20 % between 2-round timings
    p50 = latencies(paths, lambda runner: latency_feeds(data.val, batch, runner.inputs[0].name), batch, b.threads,
                    warmup=b.warmup, runs=b.runs, rounds=b.rounds)
    points = [_point(recipe, ratio, count_params(model), p50) for ratio, model in models.items()]
    return points, round(p50["baseline"], 4)


def _point(recipe, ratio: float, params: int, p50: dict[str, float]):
    """The width's latencies; it would ship as INT8 unless FP32 is faster and allowed to ship."""
    from compress.pruning.width_search import WidthPoint

    fp32, int8 = p50[f"{ratio}-fp32"], p50.get(f"{ratio}-int8")
    form = "int8" if int8 is not None and (int8 <= fp32 or not recipe.quantize.fp32_if_faster) else "fp32"
    shipped = int8 if form == "int8" else fp32
    return WidthPoint(ratio, params, form, round(shipped, 4), round(fp32, 4),
                      None if int8 is None else round(int8, 4), round(p50["baseline"] / shipped, 3),
                      allowance_pt=allowance(recipe, int8_slower=int8 is not None and form == "fp32"))


def after(run, record) -> None:
    """Later stages see the chosen ratio as the recipe's (so the prune stage's key names it)."""
    r = run.recipe
    run.recipe = dataclasses.replace(r, prune=dataclasses.replace(r.prune, ratio=record.metrics["chosen_ratio"]))


def search_settings(run) -> dict:
    """The key: what the search reads (the students' schedules and the timing settings included), and the curve's
    format; settings that only ship (budget.allow_baseline, bench.batch_sizes past the decision batch, ...) do not
    rerun it."""
    from compress.driver import plain
    from compress.pruning.width_search import CURVE_VERSION

    r = run.recipe
    p, q = plain(r.prune), plain(r.quantize)
    return {"curve": CURVE_VERSION, "ratios": sorted(set(r.prune.auto_ratios)), "epochs": r.prune.auto_epochs,
            "allowance_pt": [allowance(r), allowance(r, int8_slower=True)], "batch": decision_batch(r),
            "timing": [r.bench.threads, r.bench.warmup, r.bench.runs, r.bench.rounds],
            "prune": {k: p[k] for k in ("method", "scope", "importance", "round_to", "finetune_epochs", "lr", "blocks")
                      if k in p},
            "distill": plain(r.distill),
            "quantize": {k: q[k] for k in ("enabled", "mode", "calibration", "per_channel", "activation_type",
                                           "fp32_if_faster") if k in q},
            "parity_atol": r.target.parity_atol}


# all_ranks: the driver ends the other ranks at the first stage without it, and prune after this one is data-parallel
STAGE = Stage("widths", (search_settings, "key:train"), outputs, body, enabled=enabled, after=after, all_ranks=True)
