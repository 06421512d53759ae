"""How trustworthy are the figures? Bench the same artifacts twice, N times, and tally.

    python -m tools.stability baseline=fp32.onnx compressed=int8.onnx --repeats 20 --out stability.json

For each repeat: two benches A and B of the same artifacts; counts how often `compress check B --baseline A`
passes (ratio and absolute latency modes), and how often B's p50 lies inside A's reported intervals (per variant
and batch): the repeat interval `p50_repeat_pi95`, which is meant to hold it 95 % of the time, and the CI of the
median `p50_ci95`, which is not (see bench.latency.repeat_interval); and the ratio to the baseline inside A's
paired ratio CI. Prints the tallies; writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.gate import _stats, baseline_name, check_reports, default_variant, get_variant
from bench.latency import paired_ratio_stats
from bench.standalone import bench_artifacts, parse_artifacts


def _inside(x: float, ci: tuple[float, float, float]) -> bool:
    return ci[1] <= x <= ci[2]


def _repeat_pi(variant: dict, batch: str) -> tuple[float, float, float] | None:
    s = variant["latency_ms"][batch]
    return (s["p50"], *s["p50_repeat_pi95"]) if s.get("p50_repeat_pi95") else None


def run_noise(records: list[dict]) -> dict[str, float]:
    """The machine's relative shift between whole benches that the blocks inside a bench do not show (sigma_run):
    per pair and series, log(B/A)^2 minus what the two benches' block spreads explain, halved, averaged; pooled
    over all series, and per series. Feed the pooled figure to `compress bench --run-noise-pct`."""
    import numpy as np

    excess: dict[str, list[float]] = {}
    for rec in records:
        for series, p in rec["p50"].items():
            if series.startswith("ratio"):
                continue
            la, lb = (np.log(rec["block_p50"][f"{side}/{series}"]) for side in ("A", "B"))
            if len(la) < 2 or len(lb) < 2:
                continue
            d = float(np.log(p["b"] / p["a"]))
            excess.setdefault(series, []).append(d * d - (la.var(ddof=1) / len(la) + lb.var(ddof=1) / len(lb)))
    pct = lambda xs: round(100 * float(np.sqrt(max(0.0, np.mean(xs) / 2))), 2)  # noqa: E731
    out = {series: pct(xs) for series, xs in excess.items()}
    out["pooled"] = pct([x for xs in excess.values() for x in xs]) if excess else 0.0
    return out


def run(artifacts: list[str], *, repeats: int, batch_sizes: tuple[int, ...], runs: int, rounds: int, warmup: int,
        threads: int, pct: float, run_noise_pct: float = 0.0) -> dict:
    pairs = parse_artifacts(artifacts)
    tallies = {"pairs": 0, "check_ratio_pass": 0, "check_absolute_pass": 0, "p50_cases": 0, "p50_in_ci": 0,
               "p50_in_repeat_pi": 0, "repeat_pi_cases": 0, "ratio_cases": 0, "ratio_in_ci": 0}
    records = []
    for i in range(repeats):
        start = time.perf_counter()
        a, b = (bench_artifacts(pairs, batch_sizes=batch_sizes, runs=runs, rounds=rounds, warmup=warmup,
                                threads=threads, run_noise_pct=run_noise_pct) for _ in range(2))
        ratio = check_reports(b, a, mode="ratio", max_latency_regression=pct)
        absolute = check_reports(b, a, mode="absolute", max_latency_regression=pct)
        tallies["pairs"] += 1
        tallies["check_ratio_pass"] += ratio.passed
        tallies["check_absolute_pass"] += absolute.passed
        base, cand = baseline_name(a), default_variant(a)
        rec = {"repeat": i, "ratio_passed": ratio.passed, "absolute_passed": absolute.passed, "p50": {}}
        for v in a["variants"]:
            vb = get_variant(b, v["name"], "B")
            for bs in v["latency_ms"]:
                sa, sb, pa = _stats(v, bs, "A"), _stats(vb, bs, "B"), _repeat_pi(v, bs)
                tallies["p50_cases"] += 1
                tallies["p50_in_ci"] += _inside(sb[0], sa)
                if pa is not None:  # a bench of < 2 rounds has none
                    tallies["repeat_pi_cases"] += 1
                    tallies["p50_in_repeat_pi"] += _inside(sb[0], pa)
                rec["p50"][f"{v['name']}/b{bs}"] = {"a": sa[0], "b": sb[0], "a_ci95": sa[1:],
                                                    "a_repeat_pi95": pa[1:] if pa else None}
        if base and cand != base:
            for bs in get_variant(a, cand, "A")["latency_ms"]:
                ra = paired_ratio_stats(get_variant(a, cand, "A")["latency_ms"][bs],
                                        get_variant(a, base, "A")["latency_ms"][bs])
                rb = paired_ratio_stats(get_variant(b, cand, "B")["latency_ms"][bs],
                                        get_variant(b, base, "B")["latency_ms"][bs])
                if ra and rb:
                    tallies["ratio_cases"] += 1
                    tallies["ratio_in_ci"] += _inside(rb[0], ra)
                    rec["p50"][f"ratio/b{bs}"] = {"a": ra[0], "b": rb[0], "a_ci95": ra[1:]}
        rec["block_p50"] = {f"{r_}/{v['name']}/b{bs}": v["latency_ms"][bs]["block_p50"]
                            for r_, rep in (("A", a), ("B", b)) for v in rep["variants"] for bs in v["latency_ms"]}
        records.append(rec)
        print(f"repeat {i + 1}/{repeats}: ratio check {'pass' if ratio.passed else 'FAIL'}, absolute check "
              f"{'pass' if absolute.passed else 'FAIL'} ({time.perf_counter() - start:.0f}s)", flush=True)
    load = os.getloadavg()
    return {"artifacts": artifacts, "repeats": repeats, "runs": runs, "rounds": rounds, "warmup": warmup,
            "threads": threads, "batch_sizes": list(batch_sizes), "max_latency_regression": pct,
            "run_noise_pct_used": run_noise_pct, "sigma_run_pct": run_noise(records),
            "load_average_at_end": load, "tallies": tallies, "records": records}


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / max(1, d):.0f}%)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", help="PATH or NAME=PATH; the first is the baseline")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-latency-regression", type=float, default=10.0)
    ap.add_argument("--run-noise-pct", type=float, default=0.0,
                    help="widen the repeat interval by this machine noise (from an earlier stability run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = run(args.artifacts, repeats=args.repeats, batch_sizes=tuple(int(b) for b in args.batch.split(",")),
                 runs=args.runs, rounds=args.rounds, warmup=args.warmup, threads=args.threads,
                 pct=args.max_latency_regression, run_noise_pct=args.run_noise_pct)
    t = result["tallies"]
    print(f"check passes, ratio mode (default): {t['check_ratio_pass']}/{t['pairs']}")
    print(f"check passes, absolute mode: {t['check_absolute_pass']}/{t['pairs']}")
    print(f"repeat p50 inside the first bench's p50_repeat_pi95: {_pct(t['p50_in_repeat_pi'], t['repeat_pi_cases'])}")
    print(f"repeat p50 inside the first bench's p50_ci95: {_pct(t['p50_in_ci'], t['p50_cases'])}")
    print(f"repeat ratio to the baseline inside the first bench's paired ratio CI95: "
          f"{_pct(t['ratio_in_ci'], t['ratio_cases'])}")
    sigma = result["sigma_run_pct"]
    print(f"shift between whole benches not seen within one (sigma_run): {sigma['pooled']:.1f} % pooled; "
          + ", ".join(f"{k} {v:.1f} %" for k, v in sigma.items() if k != "pooled")
          + f" -> compress bench --run-noise-pct {sigma['pooled']:.1f}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in result['load_average_at_end'])}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
