"""`prune.ratio: auto`: time every candidate width on the target's runtime in one interleaved run, distil the
fastest briefly until one is within the allowance, and hand its ratio to the prune stage
(compress.pruning.width_search). The curve lands in widths.json, report.json's `width_search` and report.html."""
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
    p = run.recipe.prune
    return p.enabled and p.auto and not run.family.unsupported("prune")  # the prune stage says why it skips


def refuse_under_torchrun(recipe) -> None:
    """Before any training: the search times and distils on one process."""
    from compress.training import distributed

    if recipe.prune.enabled and recipe.prune.auto and distributed.world_size() > 1:
        raise CompressError("prune.ratio auto times and distils its candidate widths in one process; run it without "
                            "torchrun, or give prune.ratio a number")


def allowance(recipe) -> float:
    """The validation drop (pt) a width may show once distilled: prune.auto_max_drop, or what the budget
    leaves after INT8's share."""
    if recipe.prune.auto_max_drop is not None:
        return recipe.prune.auto_max_drop
    q = recipe.quantize
    return max(0.0, recipe.budget.max_accuracy_drop - (q.max_accuracy_drop if q.enabled else 0.0))


def decision_batch(recipe) -> int:
    return recipe.budget.latency_batch or recipe.bench.batch_sizes[0]


def ships_int8(recipe) -> bool:
    return recipe.quantize.enabled and recipe.quantize.mode == "static"


def body(run, out) -> dict:
    from common.atomic import write_json
    from compress.pruning import width_search as ws

    p, family, max_drop = run.recipe.prune, run.family, allowance(run.recipe)
    epochs = p.auto_epochs if p.auto_epochs is not None else run.recipe.distill.epochs
    baseline_acc = run.done["train"].metrics["val_accuracy"]  # run.teacher's, on the rows distill_width scores
    models = {r: family.pruned_at(run, r) for r in sorted(set(p.auto_ratios))}
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=run.out_dir) as work:
        points, baseline_p50 = timed_points(run, models, Path(work))
    dominated = ws.slower_than_a_wider(points)
    seen = {pt.ratio: pt for pt in points}
    for pt in ws.distil_order(points):
        log(f"[widths] ratio {pt.ratio:g}: {pt.speedup:.2f}x, distilling {epochs:g} epoch(s)")
        seen[pt.ratio] = ws.judged(pt, family.distill_width(run, models[pt.ratio], epochs), baseline_acc,
                                   max_drop)
        log(f"[widths] ratio {pt.ratio:g}: {seen[pt.ratio].drop_pt:.2f} pt below the unpruned model on validation "
            f"({seen[pt.ratio].verdict}, {max_drop:g} pt)")
        if seen[pt.ratio].verdict == ws.WITHIN:
            break
    chosen = ws.pick(list(seen.values()))
    if chosen.verdict != ws.WITHIN:
        log(f"[widths] no width within {max_drop:g} pt after {epochs:g} epoch(s); going on with the most "
            f"accurate, ratio {chosen.ratio:g} (the budget still judges what ships)")
    result = {
        "version": ws.CURVE_VERSION, "chosen_ratio": chosen.ratio, "allowance_pt": max_drop,
        "distill_epochs": epochs, "baseline_val_accuracy": baseline_acc,
        "batch": decision_batch(run.recipe), "baseline_p50_ms": baseline_p50, "timed_on": TIMED_ON,
        "rule": "the fastest width within the allowance once distilled; widths no faster than a "
                "wider one (within 10 %) are not distilled",
        "curve": [pt.to_dict() for pt in ws.final_curve(list(seen.values()), chosen, dominated)],
    }
    write_json(out["widths"], result)
    return result


def timed_points(run, models: dict, work: Path) -> tuple[list, float]:
    """Each width exported (and, when the recipe quantizes statically, plain-PTQ INT8 with its settings), then every
    file and the unpruned FP32 model timed in one interleaved run at the decision batch; the points and the unpruned
    model's p50."""
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
    p50 = latencies(paths, lambda runner: latency_feeds(data.val, batch, runner.inputs[0].name), batch,
                    recipe.bench.threads)
    points = [_point(recipe, ratio, count_params(model), p50) for ratio, model in models.items()]
    return points, round(p50["baseline"], 4)


def _point(recipe, ratio: float, params: int, p50: dict[str, float]):
    """The width's latencies; it would ship as INT8 unless FP32 is faster and allowed to ship."""
    from compress.pruning.width_search import WidthPoint

    fp32, int8 = p50[f"{ratio}-fp32"], p50.get(f"{ratio}-int8")
    form = "int8" if int8 is not None and (int8 <= fp32 or not recipe.quantize.fp32_if_faster) else "fp32"
    shipped = int8 if form == "int8" else fp32
    return WidthPoint(ratio, params, form, round(shipped, 4), round(fp32, 4),
                      None if int8 is None else round(int8, 4), round(p50["baseline"] / shipped, 3))


def after(run, record) -> None:
    """Later stages see the chosen ratio as the recipe's (so the prune stage's key names it)."""
    r = run.recipe
    run.recipe = dataclasses.replace(r, prune=dataclasses.replace(r.prune, ratio=record.metrics["chosen_ratio"]))


def curve_format(run) -> str:
    """Part of the key: a record of an earlier curve format is not reused."""
    from compress.pruning.width_search import CURVE_VERSION

    return f"width-curve-{CURVE_VERSION}"


STAGE = Stage("widths", (curve_format, "key:train", "recipe:prune", "recipe:distill", "recipe:quantize",
                         "recipe:budget", "recipe:bench", "recipe:target"),
              outputs, body, enabled=enabled, after=after, all_ranks=True)
