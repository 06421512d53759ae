"""Cell formatting shared by report.md, the standalone bench's markdown, the CLI table and report.html."""
from __future__ import annotations


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def metric_word(report: dict) -> str:
    """How the tables name a row's score: "accuracy" (against labels) or "agreement" (unlabelled data: top-1
    agreement with the baseline)."""
    return "accuracy" if report.get("accuracy_metric", "accuracy") == "accuracy" else "agreement"


def drop_interval(comparison: dict) -> str:
    """' (95 % CI lo to hi, paired)' when the comparison has the paired interval, else ''."""
    ci = comparison.get("accuracy_drop_ci95_pt")
    return f" (95 % CI {ci[0]:.2f} to {ci[1]:.2f}, paired)" if ci else ""


def memory_batch(variants: list[dict]) -> str | None:
    """The batch whose peak RSS the reports hold, None when no variant has one (older reports, probe failed)."""
    return next((b for v in variants for b in v.get("memory_mib", {})), None)


def peak_rss(variant: dict, batch: str | None) -> str:
    memory = variant.get("memory_mib", {}).get(batch) if batch else None
    return f"{memory['peak_rss_mib']:.0f} MiB" if memory else "-"


def budget_cell(variant: dict) -> str:
    """'meets' / 'misses' the run's accuracy budget, with the held-out drop; '?' when its interval straddles the
    budget; '-' for rows that were not judged (a standalone bench)."""
    b = variant.get("budget")
    if not b:
        return "-"
    verdict = "meets" if b["meets"] else "misses"
    return f"{verdict}{'?' if b['uncertain'] else ''} {b['drop_pt']:+.2f}"


def budget_line(report: dict) -> str:
    """One line naming the budget and what shipped under it ('' for reports without a budget)."""
    b = report.get("budget")
    if not b:
        return ""
    of = "" if metric_word(report) == "accuracy" else " in top-1 agreement"
    head = (f"budget: at most {b['max_accuracy_drop_pt']:g} pt below the baseline{of} on {b['judged_on']['rows']} "
            f"held-out rows ({'+'.join(b['judged_on']['splits'])})")
    hint = f". {b['other_runtime']['hint']}" if b.get("other_runtime") else ""
    if b["shipped"] is None:
        return f"{head}; {b['why']}{hint}"
    row = next((v for v in report.get("variants", []) if v["name"] == b["shipped"]), None)
    drop = ""
    if row and row.get("budget"):
        v = row["budget"]
        lo, hi = v["drop_ci95_pt"]
        drop = (f", {v['drop_pt']:+.2f} pt held-out (95 % CI {lo:.2f} to {hi:.2f}"
                + ("; these rows cannot settle the verdict" if v["uncertain"] else "") + ")")
    note = f": {b['note']}" if b.get("note") else ""
    return f"{head}; shipped {b['shipped']} (fastest within the budget at batch {b['latency_batch']}{drop}){note}{hint}"
