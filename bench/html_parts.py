"""Pieces report.html's plots and tables share: colours by precision, tick values and their text, a table."""
from __future__ import annotations

import math
from html import escape

PRECISION_COLORS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "int8": "#d62728"}
OTHER_COLOR = "#7f7f7f"


def color_of(precision: str) -> str:
    return PRECISION_COLORS.get(str(precision).lower(), OTHER_COLOR)


def tick_text(x: float) -> str:
    """Tick / label text: few digits, no trailing zeros."""
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{min(digits, 4)}f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def html_table(header: list[str], rows: list[list], left: int = 1, row_classes: list[str] | None = None) -> str:
    th = "".join(f'<th{" class=l" if i < left else ""}>{escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td{" class=l" if i < left else ""}>{table_cell(c)}</td>'
                                            for i, c in enumerate(r)) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def table_cell(c: str | tuple[str, str]) -> str:
    """A cell: text, or (text, smaller second line)."""
    if isinstance(c, tuple):
        return f'{escape(c[0])}<br><span class="ci">{escape(c[1])}</span>'
    return escape(c)
