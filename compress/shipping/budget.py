"""The last steps of every run: bench the candidates, hold each to the run's accuracy budget against the
baseline, compile the fastest one within it for the target, and write the reports."""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from common.errors import GateFailed

class BudgetMissed(GateFailed):
    """No compressed candidate is within the run's accuracy budget; the report is written and carried along so
    that the CLI can still print its table."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def onnx_candidates(onnx_paths: dict[str, Path], int8_paths: dict[str, Path], student_name: str,
                    int8_kind: str, described: dict[str, str], fp16_paths: dict[str, Path] | None = None) -> list:
    """The ONNX files that may ship: the FP32 baseline and students, the baseline's INT8 (`int8`) and the
    student's (`<student>-int8`), and (GPU targets) the float16 copies `baseline-fp16` / `<student>-fp16`."""
    from bench.report import Variant

    variants = [Variant("baseline", onnx_paths["baseline"], "fp32", described["baseline"])]
    variants += [Variant(n, onnx_paths[n], "fp32", described[n]) for n in ("pruned", "distilled") if n in onnx_paths]
    if "int8" in int8_paths:
        variants.append(Variant("int8", int8_paths["int8"], "int8", f"baseline, {int8_kind} as the quantizer alone "
                                                                    "gives it"))
    if "compressed" in int8_paths:
        variants.append(Variant(f"{student_name}-int8", int8_paths["compressed"], "int8",
                                f"{described[student_name]} + {int8_kind} (searched)"))
    for name, path in (fp16_paths or {}).items():
        source = name.removesuffix("-fp16")
        variants.append(Variant(name, path, "fp16", f"{described.get(source, source)}, float16 (FP32 inputs/outputs)"))
    return variants


TENSORRT_RULE = ("TensorRT target: the student's Q/DQ INT8 graph when it meets the budget, else the baseline's; only "
                 "when no Q/DQ graph does, the FP32 student, else the baseline. No latency decides: TensorRT picks its "
                 "kernels on the device, and the bench's timings were taken elsewhere")


def tensorrt_choice(rows: list[dict[str, Any]], student_name: str) -> str | None:
    """What a TensorRT target ships, by TENSORRT_RULE (rows: the eligible ones, judged); None when nothing meets."""
    meets = {r["name"] for r in rows if r["budget"]["meets"]}
    order = (f"{student_name}-int8", "int8", student_name, "baseline")
    return next((name for name in order if name in meets), None)


def ships_tensorrt(run) -> bool:
    """Whether the run's target compiles for TensorRT (jetson; gpu where TensorRT exists)."""
    from targets import TargetSpec

    decide = getattr(run.target, "ships_tensorrt", None)
    return bool(decide and decide(TargetSpec(run.recipe.target.name, threads=run.recipe.bench.threads)))


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


def compile_stage(run, source: Path, metadata: dict[str, Any], *, upstream_key: str, check=None,
                  write_extra: Callable[[Path], list[Path]] | None = None) -> Path:
    """Compile the chosen ONNX file for the target (cached like every stage); returns the artifact's path.
    `check`: real inputs (an array, or a tuple of arrays, one per model input) every target runs its compiled form
    on and compares with the source; `write_extra(target_dir)` writes what else an app needs (a tokenizer) and
    returns those files."""
    from common.digest import file_digest
    from targets import TargetSpec

    recipe = run.recipe
    spec = TargetSpec(recipe.target.name, threads=recipe.bench.threads)
    # the source's bytes: a re-searched INT8 file of the same name must recompile
    inputs = (upstream_key, dataclasses.asdict(spec), source.name, file_digest(source), run.data.fingerprint)
    target_dir = run.out_dir / "target" / recipe.target.name

    def body():
        from runtime import sidecar_path

        meta = {**metadata, "source": source.name}
        artifact = run.target.compile(source, spec, target_dir, meta, check=check)
        files = list(artifact.files) or [artifact.path, sidecar_path(artifact.path)]
        if write_extra is not None:
            files += write_extra(target_dir)
        return files, {"artifact": str(artifact.path.relative_to(run.out_dir)), "runtime": artifact.runtime,
                       "source": source.name}

    return run.out_dir / run.cached("compile", inputs, body).metrics["artifact"]


def judge_rows(rows: list[dict[str, Any]], max_drop_pt: float) -> dict[str, Any]:
    """Adds `budget` (held-out accuracy, drop against the baseline and its paired interval, verdict) to each row;
    returns the baseline's row."""
    from bench.budget import judge

    base = next(r for r in rows if r["name"] == "baseline")
    for r in rows:
        held = r["heldout"]
        r["budget"] = judge(held["discordant_vs_baseline"], base["heldout"]["accuracy"], held["accuracy"],
                            max_drop_pt).to_dict()
    return base


NOT_SHIPPED = "NOT_SHIPPED.txt"


def eligible_rows(recipe, rows: list[dict[str, Any]]) -> set[str]:
    """The candidates that may ship: all of them, except the FP32 students when quantization is on and
    `quantize.fp32_if_faster` is false, and, when the bench timed two runtimes, those not on `target.runtime`
    (unless it is auto)."""
    names = {r["name"] for r in rows}
    runtime = recipe.target.runtime
    if len({r.get("runtime") for r in rows}) > 1 and runtime != "auto":
        names = {r["name"] for r in rows if r.get("runtime") == runtime}
    if recipe.quantize.enabled and not recipe.quantize.fp32_if_faster:
        names -= {r["name"] for r in rows if r["precision"] == "fp32" and _student(r["name"])}
    return names


def _student(name: str) -> bool:
    from compress.stages.litert import PREFIX

    return name.removeprefix(PREFIX) in ("pruned", "distilled")


def other_runtime(recipe, rows: list[dict[str, Any]], batch: str, shipped: str | None) -> dict[str, Any] | None:
    """When the bench timed two runtimes and `target.runtime` kept one of them from shipping: the fastest row of the
    other within the budget, when it beats what shipped (or when nothing did), and how to ship it."""
    runtime = recipe.target.runtime
    if runtime == "auto" or len({r.get("runtime") for r in rows}) < 2:
        return None
    others = [r for r in rows if r.get("runtime") != runtime and r["budget"]["meets"] and batch in r["latency_ms"]]
    if not others:
        return None
    best = min(others, key=lambda r: r["latency_ms"][batch]["p50"])
    p50 = best["latency_ms"][batch]["p50"]
    mine = next((r["latency_ms"][batch]["p50"] for r in rows if r["name"] == shipped), None)
    if mine is not None and mine <= p50:
        return None
    how = f"ship it with --runtime {best['runtime']} (or target.runtime: auto)"
    if mine is None:
        return {"runtime": best["runtime"], "variant": best["name"], "p50_ms": p50,
                "hint": f"{best['runtime']} has {best['name']} within the budget at {p50:.3f} ms (batch {batch}): {how}"}
    return {"runtime": best["runtime"], "variant": best["name"], "p50_ms": p50, "speedup_vs_shipped": round(mine / p50, 4),
            "hint": f"{best['runtime']} would run {mine / p50:.2f}x faster at batch {batch} ({best['name']}, within the "
                    f"budget): {how}"}


def apply_budget(recipe, rows: list[dict[str, Any]], ship: Callable[[str, str], Path], out_dir: Path, *,
                 tensorrt_student: str | None = None, as_given: bool = False) -> dict[str, Any]:
    """Judge every row, ship the fastest eligible one within the budget through `ship(name, batch) -> artifact
    path` (`batch`: the latency batch it was chosen at) and
    add the shipped row as `compressed`; returns report.json's `budget`. `tensorrt_student`: the run's student
    when the target builds a TensorRT engine (then TENSORRT_RULE chooses, not the timings). `as_given`: the run made
    no student (a pretrained or ONNX model, nothing pruned or distilled), so when no INT8 file beats the original
    the original ships, compiled for the target: the shipped file is never slower than it."""
    from bench import budget as rule

    cfg = recipe.budget
    base = judge_rows(rows, cfg.max_accuracy_drop)
    eligible = eligible_rows(recipe, rows)
    for r in rows:
        r["budget"]["eligible"] = r["name"] in eligible
    wanted = str(cfg.latency_batch) if cfg.latency_batch else None
    batch = wanted if wanted in base["latency_ms"] else next(iter(base["latency_ms"]))  # fixed-batch artifacts
    pool = [r for r in rows if r["name"] in eligible]
    chosen = rule.choose(pool, batch) if tensorrt_student is None else tensorrt_choice(pool, tensorrt_student)
    ships = chosen is not None and (chosen != "baseline" or cfg.allow_baseline or as_given)
    info = {"metric": "accuracy", "max_accuracy_drop_pt": cfg.max_accuracy_drop, "allow_baseline": cfg.allow_baseline,
            "judged_on": {"splits": ["test", "val"], "rows": base["heldout"]["rows"],
                          "excludes": "training and calibration rows"},
            "baseline_heldout_accuracy": base["heldout"]["accuracy"], "latency_batch": int(batch),
            "rule": rule.RULE if tensorrt_student is None else TENSORRT_RULE,
            "meets": [r["name"] for r in rows if r["budget"]["meets"]], "chosen": chosen,
            "shipped": chosen if ships else None}
    if as_given and ships and chosen == "baseline":
        info["note"] = ("no compressed variant is both within the budget and faster than the model as given: the "
                        "original ships")
    hint = other_runtime(recipe, rows, batch, info["shipped"])
    if hint is not None:
        info["other_runtime"] = hint
    target_dir = out_dir / "target" / recipe.target.name
    if not ships:
        info["why"] = rule.failure_message(cfg.max_accuracy_drop, pool, chosen)
        withdraw(target_dir, info["why"])
        return info
    row = next(r for r in rows if r["name"] == chosen)
    artifact = ship(chosen, batch)
    remove_models(target_dir, keep=artifact.name)  # another runtime's model from an earlier run of this directory
    (target_dir / NOT_SHIPPED).unlink(missing_ok=True)
    rows.append({**copy.deepcopy(row), "name": "compressed", "artifact": str(artifact.relative_to(out_dir)),
                 "description": f"shipped: {row['description']}", "shipped_from": chosen})
    return info


def withdraw(target_dir: Path, why: str) -> None:
    """Nothing ships: an earlier run's model in target/<target>/ must not pass for this run's. Its `model.*` files
    go (the candidates stay in the run directory) and NOT_SHIPPED.txt says why."""
    from common.atomic import write_text

    target_dir.mkdir(parents=True, exist_ok=True)
    remove_models(target_dir)
    write_text(target_dir / NOT_SHIPPED, why + "\n")


def remove_models(target_dir: Path, keep: str | None = None) -> None:
    """The `model.*` files in target/<target>/, except `keep` and its sidecar."""
    for path in target_dir.glob("model.*"):
        if path.is_file() and not (keep and path.name.startswith(keep)):
            path.unlink()


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
