"""report.html: one self-contained page (inline CSS and SVG drawn here; no scripts, no network, no plot library).

    from bench.html import to_html
    Path("report.html").write_text(to_html(report))

Shows an accuracy-vs-latency scatter per batch size with the Pareto front marked, the latency-vs-width curve of a
`prune.ratio: auto` run (bench.width_plot), a size bar chart, the variant table, the comparison, the per-stage table
and the environment.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

from bench.html_parts import OTHER_COLOR, color_of, html_table, nice_ticks, plot_frame, tick_text
from bench.width_plot import width_section
from bench.formatting import budget_cell, budget_line, drop_interval, fmt_bytes, memory_batch, metric_word, peak_rss

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"

CSS = f"""
body {{{FONT}; margin: 24px auto; max-width: 1280px; color: #222; padding: 0 16px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.sub {{ color: #555; font-size: 13px; margin-bottom: 12px; }}
.cards {{ display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 140px; }}
.card .v {{ font-size: 20px; font-weight: 600; }} .card .k {{ font-size: 12px; color: #666; }}
.figs {{ display: flex; gap: 16px; flex-wrap: wrap; }}
figure {{ margin: 0; }} figcaption {{ font-size: 12px; color: #555; max-width: 540px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 6px 0; }}
th, td {{ border-bottom: 1px solid #e4e4e4; padding: 4px 8px; text-align: right; white-space: nowrap; }}
th {{ background: #f6f6f6; white-space: normal; vertical-align: bottom; }} td:first-child, th:first-child {{ text-align: left; }}
td.l, th.l {{ text-align: left; }} tr.front td:first-child {{ font-weight: 600; }}
td:first-child .ci {{ font-weight: normal; }}
.note {{ color: #666; font-size: 12px; }}
.scroll {{ overflow-x: auto; }} .ci {{ color: #777; font-size: 11px; }}
svg text {{ {FONT}; }}
"""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """points (latency, accuracy) -> on the front? (lower latency and higher accuracy are better)."""
    out = []
    for i, (li, ai) in enumerate(points):
        dominated = any(lj <= li and aj >= ai and (lj < li or aj > ai) for j, (lj, aj) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def _place_labels(anchors: list[tuple[float, float, str]], width: float, height: float) -> list[tuple[float, float, str]]:
    """Greedy label placement to the right of (or left of, near the right edge) each point, avoiding overlaps."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for x, y, text in anchors:
        w, h = 6.6 * len(text) + 4, 13
        right = x + 9 + w < width
        bx = x + 9 if right else x - 9 - w
        for dy in (0, -14, 14, -28, 28, -42, 42, -56, 56):
            by = y - h / 2 + dy
            box = (bx, by, bx + w, by + h)
            if by < 0 or by + h > height:
                continue
            if not any(box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3] for p in placed):
                break
        placed.append(box)
        out.append((box[0] + 2 if right else box[2] - 2, box[1] + h - 3, "start" if right else "end"))
    return out


def scatter_svg(report: dict, batch: str, width: int = 540, height: int = 380) -> str:
    """Accuracy (y) vs p50 latency at `batch` (x), with CI95 bars and the Pareto front."""
    rows = [v for v in report["variants"] if isinstance(v.get("accuracy"), (int, float)) and batch in v["latency_ms"]]
    if not rows:
        return f'<p class="note">No accuracy in this report (benched without data): no scatter for batch {escape(batch)}.</p>'
    ml, mr, mt, mb = 58, 16, 28, 46
    pw, ph = width - ml - mr, height - mt - mb
    lat = [(v["latency_ms"][batch]["p50"], *v["latency_ms"][batch].get("p50_ci95", [v["latency_ms"][batch]["p50"]] * 2))
           for v in rows]
    acc = [100.0 * v["accuracy"] for v in rows]
    xticks = nice_ticks(0.0, max(max(t[2] for t in lat), max(t[0] for t in lat)) * 1.08)
    lo, hi = min(acc), max(acc)
    pad = max(0.5, (hi - lo) * 0.12)
    yticks = nice_ticks(max(0.0, lo - pad), min(100.0, hi + pad))
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return mt + ph - (y - y0) / (y1 - y0) * ph

    front = pareto_front([(t[0], a) for t, a in zip(lat, acc)])
    base_name = (report.get("comparison") or {}).get("baseline")
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="accuracy versus p50 latency at batch {escape(batch)}">']
    parts += plot_frame((ml, mt, pw, ph), height, xticks, yticks, lambda x, y: (sx(x), sy(y)),
                        (f"Accuracy vs latency, batch {escape(batch)}",
                         f"p50 latency at batch {escape(batch)} (ms), bars: 95% CI of the median", "accuracy (%)"))
    on_front = sorted((t[0], a) for t, a, f in zip(lat, acc, front) if f)
    if len(on_front) > 1:  # a step line: the best accuracy reachable within a latency budget
        d = f"M{sx(on_front[0][0]):.1f},{sy(on_front[0][1]):.1f}"
        for (xa, ya), (xb, yb) in zip(on_front, on_front[1:]):
            d += f" L{sx(xb):.1f},{sy(ya):.1f} L{sx(xb):.1f},{sy(yb):.1f}"
        parts.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1.2" stroke-dasharray="5 4"/>')
    anchors = []
    order = sorted(range(len(rows)), key=lambda i: (sy(acc[i]), sx(lat[i][0])))
    for i in order:
        v, (p50, clo, chi), a, f = rows[i], lat[i], acc[i], front[i]
        cx, cy, color = sx(p50), sy(a), color_of(v.get("precision", ""))
        parts.append(f'<line x1="{sx(clo):.1f}" y1="{cy:.1f}" x2="{sx(chi):.1f}" y2="{cy:.1f}" stroke="{color}" '
                     f'stroke-width="1.5"/>')
        for xe in (clo, chi):
            parts.append(f'<line x1="{sx(xe):.1f}" y1="{cy - 4:.1f}" x2="{sx(xe):.1f}" y2="{cy + 4:.1f}" '
                         f'stroke="{color}" stroke-width="1.5"/>')
        tip = (f"<title>{escape(v['name'])}: accuracy {a:.2f}%, p50 {p50:.4g} ms [{clo:.4g}, {chi:.4g}]"
               f"{' (Pareto front)' if f else ''}</title>")
        fill = color if f else "#fff"
        if v["name"] == base_name:
            parts.append(f'<rect x="{cx - 6:.1f}" y="{cy - 6:.1f}" width="12" height="12" fill="{fill}" '
                         f'stroke="{color}" stroke-width="2">{tip}</rect>')
        else:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{fill}" stroke="{color}" '
                         f'stroke-width="2">{tip}</circle>')
        anchors.append((cx, cy, v["name"]))
    for (tx, ty, anchor), (_, _, text) in zip(_place_labels(anchors, ml + pw, mt + ph), anchors):
        parts.append(f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="11" text-anchor="{anchor}" fill="#222" '
                     f'stroke="#fcfcfc" stroke-width="3" paint-order="stroke">'
                     f'{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def size_svg(report: dict, width: int = 540) -> str:
    """Horizontal bars of artifact size, with the ratio to the baseline."""
    rows = report["variants"]
    base_name = (report.get("comparison") or {}).get("baseline")
    base = next((v for v in rows if v["name"] == base_name), rows[0])
    bar_h, gap, ml, mr, mt = 18, 8, 120, 150, 30
    height = mt + len(rows) * (bar_h + gap) + 10
    pw = width - ml - mr
    biggest = max(v["size_bytes"] for v in rows) or 1
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="artifact sizes">',
             '<text x="0" y="18" font-size="13" font-weight="600">Artifact size</text>']
    for i, v in enumerate(rows):
        y = mt + i * (bar_h + gap)
        w = max(1.0, v["size_bytes"] / biggest * pw)
        ratio = base["size_bytes"] / v["size_bytes"] if v["size_bytes"] else float("inf")
        rel = "" if v is base else " (same size)" if 0.95 <= ratio <= 1.05 else \
            f" ({ratio:.1f}x smaller)" if ratio > 1 else f" ({1 / ratio:.1f}x larger)"
        label = fmt_bytes(v["size_bytes"]) + rel
        parts.append(f'<text x="{ml - 8}" y="{y + bar_h - 5}" font-size="12" text-anchor="end">{escape(v["name"])}</text>'
                     f'<rect x="{ml}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color_of(v.get("precision", ""))}" '
                     f'opacity="0.85"><title>{escape(v["name"])}: {v["size_bytes"]} bytes</title></rect>'
                     f'<text x="{ml + w + 6:.1f}" y="{y + bar_h - 5}" font-size="11" fill="#333">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(report: dict, batch: str, width: int = 540) -> str:
    """Horizontal bars of p50 at `batch` with CI95 whiskers: the plot when the report has no accuracy."""
    rows = [v for v in report["variants"] if batch in v["latency_ms"]]
    base_name = (report.get("comparison") or {}).get("baseline")
    base = next((v for v in rows if v["name"] == base_name), rows[0])
    bar_h, gap, ml, mr, mt = 18, 8, 120, 150, 30
    height = mt + len(rows) * (bar_h + gap) + 30
    pw = width - ml - mr
    top = max(max(v["latency_ms"][batch].get("p50_ci95", [0, 0])[1], v["latency_ms"][batch]["p50"]) for v in rows)
    ticks = nice_ticks(0.0, top * 1.05)

    def sx(x: float) -> float:
        return ml + x / ticks[-1] * pw

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="p50 latency at batch {escape(batch)}">',
             f'<text x="0" y="18" font-size="13" font-weight="600">p50 latency, batch {escape(batch)} (ms)</text>']
    axis_y = mt + len(rows) * (bar_h + gap)
    for t in ticks:
        parts.append(f'<line x1="{sx(t):.1f}" y1="{mt - 4}" x2="{sx(t):.1f}" y2="{axis_y}" stroke="#eee"/>'
                     f'<text x="{sx(t):.1f}" y="{axis_y + 14}" font-size="11" text-anchor="middle" fill="#444">'
                     f'{tick_text(t)}</text>')
    for i, v in enumerate(rows):
        s = v["latency_ms"][batch]
        lo, hi = s.get("p50_ci95", [s["p50"], s["p50"]])
        y = mt + i * (bar_h + gap)
        color = color_of(v.get("precision", ""))
        speed = base["latency_ms"][batch]["p50"] / s["p50"] if batch in base["latency_ms"] else None
        label = f"{s['p50']:.3g} ms" + ("" if v is base or speed is None else f" ({speed:.2f}x)")
        parts.append(f'<text x="{ml - 8}" y="{y + bar_h - 5}" font-size="12" text-anchor="end">{escape(v["name"])}</text>'
                     f'<rect x="{ml}" y="{y}" width="{max(1.0, sx(s["p50"]) - ml):.1f}" height="{bar_h}" '
                     f'fill="{color}" opacity="0.85"><title>{escape(v["name"])}: p50 {s["p50"]:.4g} ms '
                     f'[{lo:.4g}, {hi:.4g}]</title></rect>'
                     f'<line x1="{sx(lo):.1f}" y1="{y + bar_h / 2}" x2="{sx(hi):.1f}" y2="{y + bar_h / 2}" stroke="#222"/>'
                     f'<line x1="{sx(lo):.1f}" y1="{y + 4}" x2="{sx(lo):.1f}" y2="{y + bar_h - 4}" stroke="#222"/>'
                     f'<line x1="{sx(hi):.1f}" y1="{y + 4}" x2="{sx(hi):.1f}" y2="{y + bar_h - 4}" stroke="#222"/>'
                     f'<text x="{max(sx(hi), sx(s["p50"])) + 6:.1f}" y="{y + bar_h - 5}" font-size="11" fill="#333">'
                     f'{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def legend_svg() -> str:
    """Colour per precision, fill for the Pareto front, square for the baseline."""
    items = [(f'<circle cx="6" cy="12" r="5" fill="{color_of("fp32")}"/>', "fp32"),
             (f'<circle cx="6" cy="12" r="5" fill="{color_of("int8")}"/>', "int8"),
             (f'<circle cx="6" cy="12" r="5" fill="{OTHER_COLOR}"/>', "other precision"),
             ('<circle cx="6" cy="12" r="5" fill="#444"/>', "filled: on the Pareto front"),
             ('<circle cx="6" cy="12" r="5" fill="#fff" stroke="#444" stroke-width="2"/>', "hollow: dominated"),
             ('<rect x="1" y="7" width="10" height="10" fill="#fff" stroke="#444" stroke-width="2"/>', "square: baseline"),
             ('<line x1="0" y1="12" x2="12" y2="12" stroke="#444" stroke-width="1.5"/>', "bar: 95% CI of p50")]
    parts, x = [], 4
    for mark, text in items:
        parts.append(f'<g transform="translate({x} 0)">{mark}<text x="16" y="16" font-size="11">{escape(text)}</text></g>')
        x += 16 + 6.2 * len(text) + 18
    return f'<svg width="{x:.0f}" height="24" role="img" aria-label="legend">' + "".join(parts) + "</svg>"


def variant_table(report: dict) -> str:
    rows = report["variants"]
    batches = list(rows[0]["latency_ms"]) if rows else []
    base_name = (report.get("comparison") or {}).get("baseline")
    base = next((v for v in rows if v["name"] == base_name), rows[0] if rows else None)
    fronts: dict[str, list[str]] = {}
    for b in batches:
        pts = [v for v in rows if isinstance(v.get("accuracy"), (int, float)) and b in v["latency_ms"]]
        for v, f in zip(pts, pareto_front([(v["latency_ms"][b]["p50"], v["accuracy"]) for v in pts])):
            if f:
                fronts.setdefault(v["name"], []).append(f"b{b}")
    header = ["variant", "precision", metric_word(report), "top-1 agree", "size"]
    header += [f"p50 b{b} (ms)" for b in batches] + [f"p99 b{b} (ms)" for b in batches]
    top = memory_batch(rows)
    header += [f"speed-up b{b}" for b in batches] + ([f"peak RSS b{top}"] if top else []) + ["Pareto front at"]
    judged = "budget" in report
    header += ["budget (drop pt)"] if judged else []
    out = []
    for v in rows:
        acc = "-" if v.get("accuracy") is None else f"{100 * v['accuracy']:.2f}%"
        agree = v.get("top1_agreement_vs_baseline")
        name = (v["name"], str(v["description"])) if v.get("description") else v["name"]
        r = [name, str(v.get("precision", "")), acc, "-" if agree is None else f"{100 * agree:.1f}%",
             fmt_bytes(v["size_bytes"])]
        for b in batches:
            s = v["latency_ms"].get(b)
            ci = s.get("p50_ci95") if s else None
            r.append("-" if not s else (f"{s['p50']:.3f}", f"[{ci[0]:.3f}, {ci[1]:.3f}]") if ci else f"{s['p50']:.3f}")
        r += [f"{v['latency_ms'][b]['p99']:.3f}" if b in v["latency_ms"] else "-" for b in batches]
        r += [f"{base['latency_ms'][b]['p50'] / v['latency_ms'][b]['p50']:.2f}x"
              if base and b in v["latency_ms"] and b in base["latency_ms"] else "-" for b in batches]
        r += [peak_rss(v, top)] if top else []
        r.append(", ".join(fronts.get(v["name"], [])) or "-")
        r += [budget_cell(v)] if judged else []
        out.append(r)
    return html_table(header, out, left=2, row_classes=["front" if fronts.get(v["name"]) else "" for v in rows])


def stage_table(report: dict) -> str:
    stages = report.get("stages") or []
    if not stages:
        return '<p class="note">No stages recorded.</p>'
    rows = []
    for s in stages:
        wall = s.get("wall_s")
        note = (s.get("metrics") or {}).get("note", "")
        rows.append([str(s.get("name", "?")), "yes" if s.get("cached") else "no",
                     "-" if wall is None else f"{float(wall):.1f}", str(note)])
    total = sum(float(s.get("wall_s") or 0) for s in stages)
    rows.append(["total", "", f"{total:.1f}", ""])
    return html_table(["stage", "cached", "wall (s)", "note"], rows)


def _cards(report: dict) -> str:
    c = report.get("comparison") or {}
    line = budget_line(report)
    budget = f'<p class="sub">{escape(line)}</p>' if line else ""
    if not c:
        return budget
    cards = []
    drop = c.get("accuracy_drop_pt")
    cards.append(("accuracy drop" + drop_interval(c), "n/a" if drop is None else f"{drop:.2f} pt"))
    for b, r in (c.get("speedup_p50") or {}).items():
        cards.append((f"p50 speed-up, batch {b}", f"{r:.2f}x"))
    if c.get("size_ratio"):
        cards.append(("smaller", f"{c['size_ratio']:.1f}x"))
    head = f'<p class="sub"><b>{escape(str(c.get("candidate")))}</b> vs <b>{escape(str(c.get("baseline")))}</b>, ' \
           f'measured in the same run:</p>'
    return budget + head + '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>' for k, v in cards) + \
        "</div>"


def _title(report: dict) -> str:
    if report.get("title"):
        return str(report["title"])
    name = (report.get("recipe") or {}).get("name", "report")
    return f"Compression report: {name} -> {report.get('target', '?')}"


def to_html(report: dict) -> str:
    """The whole report as one HTML page with inline SVG (opens offline, mails as one file)."""
    rows = report.get("variants") or []
    if not rows:
        return "<!doctype html><meta charset=utf-8><title>empty report</title><p>No variants in this report.</p>"
    env = report.get("environment") or {}
    data = report.get("dataset") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())
    batches = list(rows[0]["latency_ms"])
    sub = (f"Data: {data.get('name', '?')} {data.get('split', '')} ({data.get('samples', '?')} samples). "
           f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores, {env.get('threads', '?')} threads. "
           f"Timing: {env.get('timing', '?')}.")
    has_accuracy = any(isinstance(v.get("accuracy"), (int, float)) for v in rows)
    if has_accuracy:
        figs = "".join(f"<figure>{scatter_svg(report, b)}</figure>" for b in batches)
        plots = ["<h2>Accuracy vs latency</h2>", legend_svg(), f'<div class="figs">{figs}</div>',
                 '<p class="note">Up and to the left is better. The Pareto front (filled, dashed step line) holds the '
                 'variants that no other variant beats on both accuracy and latency. Absolute times on shared machines '
                 'drift between runs; ratios within one run (speed-up) are the reliable figures.</p>']
    else:
        figs = "".join(f"<figure>{latency_svg(report, b)}</figure>" for b in batches)
        plots = ["<h2>Latency</h2>", '<p class="note">No accuracy in this report (benchmarked on random inputs, '
                 'without data), so no accuracy-vs-latency plot: p50 per variant with its 95% CI, and the speed-up '
                 'over the baseline measured in the same run.</p>', f'<div class="figs">{figs}</div>']
    body = [
        f"<h1>{escape(_title(report))}</h1>",
        f'<p class="sub">{escape(sub)}</p>',
        _cards(report),
        *plots,
        *width_section(report),
        "<h2>Size</h2>",
        size_svg(report),
        "<h2>Variants</h2>",
        '<p class="note">Under each name its description; under each p50 the bootstrap 95% CI of the median. '
        'Speed-up = baseline p50 / variant p50, both from the same run.</p>',
        variant_table(report),
        "<h2>Stages</h2>",
        stage_table(report),
        "<h2>Environment</h2>",
        f'<p class="note">{escape(env.get("os", ""))} {escape(env.get("machine", ""))}; {escape(versions)}</p>',
    ]
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width'><title>{escape(_title(report))}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
