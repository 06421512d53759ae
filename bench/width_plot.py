"""report.html's latency-vs-width section for `prune.ratio: auto` (report.json `width_search`): p50 of every
candidate width, FP32 and INT8, timed in one run beside the unpruned model, the accuracy of each width's better
student (fine-tuned or distilled), and the chosen one."""
from __future__ import annotations

from html import escape

from bench.html_parts import PRECISION_COLORS, html_table, nice_ticks, plot_frame


def width_curve_svg(search: dict, width: int = 540, height: int = 340) -> str:
    curve = search["curve"]
    series = {"fp32": [(0.0, search["baseline_p50_ms"])] + [(c["ratio"], c["p50_ms_fp32"]) for c in curve],
              "int8": [(c["ratio"], c["p50_ms_int8"]) for c in curve if c.get("p50_ms_int8") is not None]}
    series = {form: pts for form, pts in series.items() if pts}  # no INT8 line when the recipe does not quantize
    ml, mr, mt, mb = 58, 16, 28, 46
    pw, ph = width - ml - mr, height - mt - mb
    xticks = nice_ticks(0.0, 1.0)
    yticks = nice_ticks(0.0, max(y for pts in series.values() for _, y in pts) * 1.1)

    def sx(x: float) -> float:
        return ml + (x - xticks[0]) / (xticks[-1] - xticks[0]) * pw

    def sy(y: float) -> float:
        return mt + ph - (y - yticks[0]) / (yticks[-1] - yticks[0]) * ph

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="p50 latency versus fraction of channels removed">']
    parts += plot_frame((ml, mt, pw, ph), height, xticks, yticks, lambda x, y: (sx(x), sy(y)),
                        (f"Latency vs width, batch {search['batch']}", "fraction of channels removed (prune.ratio)",
                         "p50 latency (ms)"))
    for form, pts in series.items():
        color = PRECISION_COLORS[form]
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{color}"><title>{form} ratio {x:g}: '
                  f'{y:.4g} ms</title></circle>' for x, y in pts]
    for k, form in enumerate(series):  # legend, top right
        y = mt + 16 + 16 * k
        parts.append(f'<line x1="{ml + pw - 70}" y1="{y - 4}" x2="{ml + pw - 50}" y2="{y - 4}" '
                     f'stroke="{PRECISION_COLORS[form]}" stroke-width="2"/>'
                     f'<text x="{ml + pw - 44}" y="{y}" font-size="11">{form}</text>')
    parts.append(f'<text x="{sx(0) + 8:.1f}" y="{sy(search["baseline_p50_ms"]) - 8:.1f}" font-size="11">unpruned '
                 f'FP32</text>')
    for c in curve:
        x, y = sx(c["ratio"]), sy(c["p50_ms"])
        if c["verdict"] == "chosen":
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#222" stroke-width="2"/>')
        if c.get("drop_pt") is not None:
            parts.append(f'<text x="{x:.1f}" y="{y + 20:.1f}" font-size="11" text-anchor="middle" fill="#222">'
                         f'{-c["drop_pt"]:+.2f} pt</text>')
    parts.append("</svg>")
    return "".join(parts)


def width_section(report: dict) -> list[str]:
    """The section's HTML pieces, or none when the run did not search widths."""
    search = report.get("width_search")
    if not search or not search.get("curve"):
        return []
    rows = [[f"{c['ratio']:g}", f"{c['params']:,}", c["form"], f"{c['p50_ms']:.4g}", f"{c['speedup']:.2f}x",
             "" if c.get("val_accuracy") is None else f"{100 * c['val_accuracy']:.2f} ({c.get('student') or '?'})",
             "" if c.get("drop_pt") is None else f"{c['drop_pt']:+.2f}",
             "" if c.get("allowance_pt") is None else f"{c['allowance_pt']:g}", c["verdict"]]
            for c in search["curve"]]
    header = ["prune.ratio", "params", "form", "p50 ms", "speed-up vs FP32", "val acc % (better student)", "drop pt",
              "allowance pt", "verdict"]
    table = html_table(header, rows, left=1)
    schedule = (f"{search['epochs']:g} epoch(s) of each" if search.get("epochs") is not None
                else "the prune and distill stages' own schedules")
    note = (f"prune.ratio auto chose {search['chosen_ratio']:g} (ringed): {search['rule']}. The chosen "
            f"width's allowance {search['allowance_pt']:g} pt after {schedule} (labels under each width: its accuracy "
            f"change against the unpruned model's {100 * search['baseline_val_accuracy']:.2f} %). "
            f"Timed on {search['timed_on']}.")
    return ["<h2>Width search</h2>", f"<figure>{width_curve_svg(search)}</figure>",
            f'<p class="note">{escape(note)}</p>', table]
