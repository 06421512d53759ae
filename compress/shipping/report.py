"""What a run reports and an artifact carries: the bench of every candidate, the budget's verdict, report.json / .md /
.html, and the sidecar that tells an app how to feed the shipped model."""
from __future__ import annotations
import time
from pathlib import Path
from typing import Any, Callable
from common.version import __version__
from compress.shipping.budget import BudgetMissed, apply_budget
from compress.shipping.compile import ships_tensorrt


def latency_measured_on(run, rows: list[dict[str, Any]], environment: dict[str, Any]) -> str:
    """One line for the report: which processor the latencies come from, and what only the device can measure."""
    from targets import TargetSpec

    note = getattr(run.target, "latency_note", None)
    note = note(TargetSpec(run.recipe.target.name, threads=run.recipe.bench.threads)) if note else None
    providers = {r.get("provider") for r in rows}
    gpu = (environment.get("gpu") or {}).get("name", "a GPU whose name was not reported")
    if environment.get("device"):
        from bench.device import device_line

        where = device_line(environment["device"])
    elif providers == {"CUDAExecutionProvider"}:
        where = f"{gpu} (ONNX Runtime CUDAExecutionProvider, I/O binding)"
    elif "CUDAExecutionProvider" in providers:  # never a CPU figure under the GPU's name
        where = (f"mixed: the rows whose provider is CUDAExecutionProvider on {gpu}, the others on the build host "
                 f"CPU, {environment.get('cpu', '?')}; compare only rows of one provider")
    else:
        runtimes = " / ".join(sorted({"LiteRT" if r.get("runtime") == "litert" else "ONNX Runtime" for r in rows}))
        where = f"build host CPU, {environment.get('cpu', '?')} ({runtimes})"
        if any(r.get("fell_back_to_cpu") for r in rows):
            where += "; the target's GPU provider is not available here, so no GPU latency was measured"
    return f"{where}; {note}" if note else where


def finish_report(run, variants: list, parity: dict[str, Any], quantize: dict[str, Any],
                  ship: Callable[[str, str], Path], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bench every candidate (never cached), ship the one the budget picks, write report.json / .md / .html.

    `parity`: each artifact against its torch model; `quantize`: what the INT8 stage recorded. Raises
    BudgetMissed (exit 1), after writing the reports, when nothing compressed is within the budget."""
    from bench.report import assemble_report, measure_variants, write_reports

    from bench.device import for_bench

    student_name = run.student_name
    start = time.perf_counter()
    device = for_bench(run.recipe.bench)
    rows = measure_variants(run.recipe, run.data, variants, run.out_dir, getattr(run.target, "PROVIDERS", None),
                            device)
    bench = {"name": "bench", "cached": False, "wall_s": round(time.perf_counter() - start, 2), "metrics": {}}
    before_ship = len(run.records)
    budget = apply_budget(run.recipe, rows, ship, run.out_dir,
                          tensorrt_student=student_name if ships_tensorrt(run) else None,
                          as_given=student_name == "baseline")
    if not getattr(run.data, "labelled", True):  # unlabelled: the baseline's predictions are the labels
        budget["metric"] = "top1_agreement_vs_baseline"
    shipped = budget["shipped"]
    if shipped in parity:  # the names report.json used before the budget chose among candidates
        parity["compressed"] = parity[shipped]
    if "compressed" in quantize and shipped in (student_name, f"{student_name}-int8"):
        quantize["compressed"]["shipped"] = "int8" if shipped.endswith("-int8") else "fp32"
    stage_info = [{"name": r.name, "cached": cached, "wall_s": round(r.wall_s, 2), "metrics": r.metrics}
                  for r, cached in run.records]
    stage_info.insert(before_ship, bench)
    report = assemble_report(run.recipe, run.data, rows, stage_info,
                             {"parity": parity, "quantize": quantize, "budget": budget})
    report.update(extra or {})
    if "widths" in run.done:  # prune.ratio auto: the latency-vs-width curve and the ratio it chose
        report["width_search"] = run.done["widths"].metrics
    if device is not None:
        report["environment"]["device"] = device.environment
    report["latency_measured_on"] = latency_measured_on(run, rows, report["environment"])
    report["distillation"] = distillation_effect(rows)
    report["student"] = {"chosen": student_name, "val_accuracy": run.student_val,
                         "rule": "higher validation accuracy of the pruned students; ties go to the distilled one"}
    write_reports(report, run.out_dir)
    if budget["shipped"] is None:
        raise BudgetMissed(budget["why"], report)
    return report


def distillation_effect(rows: list[dict[str, Any]]) -> dict[str, float]:
    """How much of the accuracy that pruning lost (fine-tuned without a teacher) distillation won back."""
    acc = {r["name"]: r["accuracy"] for r in rows}
    if not {"baseline", "pruned", "distilled"} <= set(acc):
        return {}
    lost = acc["baseline"] - acc["pruned"]
    recovered = acc["distilled"] - acc["pruned"]
    return {"pruning_loss_pt": round(100 * lost, 4), "recovered_pt": round(100 * recovered, 4),
            "recovered_fraction": round(recovered / lost, 4) if lost > 0 else None}


def sidecar(run) -> dict[str, Any]:
    """What the artifact's sidecar tells an app: where it came from, its labels and how to feed it."""
    return {"producer": f"edge-compress {__version__}", "recipe": run.recipe.name, "dataset": run.data.name,
            "labels": list(run.data.labels), "preprocess": run.family.preprocess(run)}
