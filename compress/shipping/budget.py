"""The last steps of every run: bench the candidates, hold each to the run's accuracy budget against the
baseline, compile the fastest one within it for the target, and write the reports."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from common.errors import GateFailed
from compress.shipping.compile import TENSORRT_RULE, tensorrt_choice

LITERT_PREFIX = "litert-"  # the names of LiteRT candidates timed beside a target's own (compress.stages.litert)

class BudgetMissed(GateFailed):
    """No compressed candidate is within the run's accuracy budget; the report is written and carried along so
    that the CLI can still print its table."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


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
    return name.removeprefix(LITERT_PREFIX) in ("pruned", "distilled")


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
