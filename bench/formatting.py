"""Cell formatting shared by report.md, the standalone bench's markdown, the CLI table and report.html."""
from __future__ import annotations


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


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
