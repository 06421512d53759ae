"""The run's accuracy budget: every candidate held to the FP32 baseline, and the one that ships.

Each stage checks its own step (parity with torch, INT8 against its FP32 source); a chain of such small, locally
acceptable losses can still ship a useless model. Here every candidate is judged against the *baseline* on all
held-out rows (validation and test: none of them was used for training or calibration), with the paired 95 %
interval of its drop, and the fastest candidate within the budget ships. Pure functions over report rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from bench.accuracy import paired_drop_interval
from bench.latency import paired_ratio_stats

RULE = ("fastest p50 at the latency batch among the variants whose held-out accuracy is within the budget of the "
        "baseline's; variants not measurably slower than the fastest (95 % interval of the per-round p50 ratio "
        "includes 1) are a tie, broken by held-out accuracy")


@dataclass(frozen=True)
class Verdict:
    accuracy: float  # on every held-out row
    drop_pt: float  # baseline's held-out accuracy minus this one's, in points
    drop_ci95_pt: tuple[float, float]  # paired 95 % interval of the drop
    meets: bool  # drop_pt <= the budget
    uncertain: bool  # the interval straddles the budget: these rows cannot settle the verdict

    def to_dict(self) -> dict[str, Any]:
        return {"heldout_accuracy": round(self.accuracy, 6), "drop_pt": round(self.drop_pt, 4),
                "drop_ci95_pt": list(self.drop_ci95_pt), "meets": self.meets, "uncertain": self.uncertain}


def judge(discordant: dict[str, int], baseline_accuracy: float, accuracy: float, max_drop_pt: float) -> Verdict:
    """One candidate against the baseline, from its held-out accuracy and its discordant rows against it."""
    drop = 100.0 * (baseline_accuracy - accuracy)
    lo, hi = paired_drop_interval(**discordant)
    meets = drop <= max_drop_pt + 1e-9
    return Verdict(accuracy, drop, (lo, hi), meets, lo <= max_drop_pt < hi)


def choose(rows: Iterable[dict[str, Any]], batch: str) -> str | None:
    """The row that ships: among rows whose `budget.meets` holds, the fastest p50 at `batch`; rows whose p50
    interval overlaps the fastest's tie with it and the most accurate of them wins. None when no row meets."""
    meeting = [r for r in rows if r["budget"]["meets"] and batch in r["latency_ms"]]
    if not meeting:
        return None
    fastest = min(meeting, key=lambda r: r["latency_ms"][batch]["p50"])
    tied = [r for r in meeting if r is fastest or not measurably_slower(r, fastest, batch)]
    best = max(tied, key=lambda r: (r["budget"]["heldout_accuracy"], -r["latency_ms"][batch]["p50"]))
    return best["name"]


def measurably_slower(row: dict[str, Any], fastest: dict[str, Any], batch: str) -> bool:
    """Whether `row` is slower than `fastest` beyond the bench's noise: the 95 % interval of their per-round p50
    ratio (blocks of one round are timed back to back) lies above 1; without per-round medians, their p50
    intervals do not overlap. A loaded machine widens each p50 interval but hardly the paired ratio's."""
    paired = paired_ratio_stats(row["latency_ms"][batch], fastest["latency_ms"][batch])
    if paired is not None:
        return paired[1] > 1.0
    return _interval(row, batch)[0] > _interval(fastest, batch)[1]


def _interval(row: dict[str, Any], batch: str) -> tuple[float, float]:
    stats = row["latency_ms"][batch]
    lo, hi = stats.get("p50_ci95") or (stats["p50"], stats["p50"])
    return lo, hi


def failure_message(max_drop_pt: float, rows: list[dict[str, Any]], chosen: str | None,
                    baseline: str = "baseline") -> str:
    """One line: why nothing compressed ships (`rows`: the candidates that were eligible to ship)."""
    closest = min((r for r in rows if r["name"] != baseline), key=lambda r: r["budget"]["drop_pt"], default=None)
    others_meet = any(r["budget"]["meets"] for r in rows if r["name"] != baseline)
    if chosen == baseline and others_meet:
        why = "no compressed variant within the budget runs faster than the baseline"
    else:
        why = "only the baseline is within the budget"
    near = (f"; closest: {closest['name']} at {closest['budget']['drop_pt']:.2f} pt "
            f"(95 % CI {closest['budget']['drop_ci95_pt'][0]:.2f} to {closest['budget']['drop_ci95_pt'][1]:.2f})"
            if closest else "")
    return (f"nothing shipped: {why} (budget.max_accuracy_drop {max_drop_pt:g} pt on held-out rows){near}; "
            "raise the budget, train longer or prune less, or set budget.allow_baseline: true to ship the baseline")
