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


def plot_frame(box: tuple[float, float, float, float], height: float, xticks: list[float], yticks: list[float],
               scale, labels: tuple[str, str, str]) -> list[str]:
    """An x-y plot's frame, grid, tick labels and (title, x label, y label), already escaped: SVG pieces. `box` is
    (left, top, width, height) of the plot area, `scale` maps (x, y) data to pixels."""
    ml, mt, pw, ph = box
    title, xlabel, ylabel = labels
    parts = [f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#bbb"/>']
    for t in xticks:
        x = scale(t, yticks[0])[0]
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{mt + ph + 16}" font-size="11" text-anchor="middle" fill="#444">'
                     f'{tick_text(t)}</text>')
    for t in yticks:
        y = scale(xticks[0], t)[1]
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#444">'
                     f'{tick_text(t)}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle">{xlabel}</text>')
    parts.append(f'<text transform="translate(14 {mt + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">'
                 f'{ylabel}</text>')
    parts.append(f'<text x="{ml}" y="18" font-size="13" font-weight="600">{title}</text>')
    return parts


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
