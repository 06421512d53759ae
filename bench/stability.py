"""How trustworthy are the figures? Bench the same artifacts twice, N times, and tally.

    python -m bench.stability baseline=fp32.onnx compressed=int8.onnx --repeats 20 --out stability.json

For each repeat: two benches A and B of the same artifacts; counts how often `compress check B --baseline A`
passes (ratio and absolute latency modes), and how often B's p50 lies inside A's reported 95 % CI
(per variant and batch; for the ratio to the baseline too). Prints the tallies; writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import copy

import numpy as np

from bench.gate import (_stats, baseline_name, check_reports, default_variant, get_variant, paired_ratio_stats,
                        ratio_stats)
from bench.standalone import bench_artifacts, parse_artifacts


def block_bootstrap_median_ci(blocks: list[np.ndarray], *, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % CI of the median that keeps the blocks: resample blocks, then samples within each chosen block.

    Samples within a block share the machine's state (another job's load, clocks, caches), so they are not
    independent; a plain bootstrap over all samples ignores the block-to-block spread and gives intervals
    far narrower than the run-to-run spread of the median."""
    rng = np.random.default_rng(seed)
    k = len(blocks)
    medians = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(0, k, size=k)
        medians[r] = np.median(np.concatenate([blocks[c][rng.integers(0, len(blocks[c]), size=len(blocks[c]))]
                                               for c in chosen]))
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


class _WithBlockCI:
    def __init__(self, stats, block_ci: tuple[float, float], block_p50: list[float]) -> None:
        self.stats, self.block_ci, self.block_p50 = stats, block_ci, block_p50

    def to_dict(self) -> dict:
        return {**self.stats.to_dict(), "p50_ci95_blocks": list(self.block_ci), "block_p50": self.block_p50}


def measure_interleaved_with_block_ci(open_by_variant, batch_size, *, warmup, runs, rounds, on_block=None):
    """bench.latency.measure_interleaved, also reporting the block-bootstrap CI (the proposed default)."""
    from bench.latency import interleaved_blocks, summarize

    samples = interleaved_blocks(open_by_variant, warmup=warmup, runs=runs, rounds=rounds, on_block=on_block)
    return {name: _WithBlockCI(summarize(np.concatenate(s), batch_size), block_bootstrap_median_ci(s),
                               [float(np.median(b)) for b in s]) for name, s in samples.items()}


def _swap_ci(report: dict) -> dict:
    """The report with p50_ci95 replaced by the block-bootstrap CI."""
    out = copy.deepcopy(report)
    for v in out["variants"]:
        for s in v["latency_ms"].values():
            s["p50_ci95"] = s["p50_ci95_blocks"]
    return out


def _inside(x: float, ci: tuple[float, float, float]) -> bool:
    return ci[1] <= x <= ci[2]


def run(artifacts: list[str], *, repeats: int, batch_sizes: tuple[int, ...], runs: int, rounds: int, warmup: int,
        threads: int, pct: float) -> dict:
    pairs = parse_artifacts(artifacts)
    tallies = {"check_ratio_pass": 0, "check_absolute_pass": 0, "pairs": 0,
               "p50_in_ci": 0, "p50_cases": 0, "ratio_in_ci": 0, "ratio_cases": 0,
               "blocks_check_ratio_pass": 0, "blocks_check_absolute_pass": 0, "blocks_p50_in_ci": 0,
               "blocks_ratio_in_ci": 0, "paired_check_ratio_pass": 0, "paired_ratio_in_ci": 0}
    import bench.report

    original = bench.report.measure_interleaved
    bench.report.measure_interleaved = measure_interleaved_with_block_ci
    try:
        return _run(pairs, tallies, repeats=repeats, batch_sizes=batch_sizes, runs=runs, rounds=rounds,
                    warmup=warmup, threads=threads, pct=pct, artifacts=artifacts)
    finally:
        bench.report.measure_interleaved = original


def _run(pairs, tallies, *, repeats, batch_sizes, runs, rounds, warmup, threads, pct, artifacts) -> dict:
    records = []
    for i in range(repeats):
        start = time.perf_counter()
        a, b = (bench_artifacts(pairs, batch_sizes=batch_sizes, runs=runs, rounds=rounds, warmup=warmup,
                                threads=threads) for _ in range(2))
        ratio = check_reports(b, a, mode="ratio", max_latency_regression=pct, paired=False)
        absolute = check_reports(b, a, mode="absolute", max_latency_regression=pct)
        tallies["paired_check_ratio_pass"] += check_reports(b, a, mode="ratio", max_latency_regression=pct,
                                                            paired=True).passed
        tallies["pairs"] += 1
        tallies["check_ratio_pass"] += ratio.passed
        tallies["check_absolute_pass"] += absolute.passed
        ab, bb = _swap_ci(a), _swap_ci(b)
        tallies["blocks_check_ratio_pass"] += check_reports(bb, ab, mode="ratio", max_latency_regression=pct,
                                                            paired=False).passed
        tallies["blocks_check_absolute_pass"] += check_reports(bb, ab, mode="absolute",
                                                               max_latency_regression=pct).passed
        base, cand = baseline_name(a), default_variant(a)
        rec = {"repeat": i, "ratio_passed": ratio.passed, "absolute_passed": absolute.passed, "p50": {}}
        for v in a["variants"]:
            for bs in v["latency_ms"]:
                sa, sb = _stats(v, bs, "A"), _stats(get_variant(b, v["name"], "B"), bs, "B")
                tallies["p50_cases"] += 1
                tallies["p50_in_ci"] += _inside(sb[0], sa)
                sa_blocks = _stats(get_variant(ab, v["name"], "A"), bs, "A")
                tallies["blocks_p50_in_ci"] += _inside(sb[0], sa_blocks)
                rec["p50"][f"{v['name']}/b{bs}"] = [sa[0], sb[0], sa[1], sa[2], sa_blocks[1], sa_blocks[2]]
        if base and cand != base:
            for bs in get_variant(a, cand, "A")["latency_ms"]:
                ra = ratio_stats(_stats(get_variant(a, cand, "A"), bs, "A"), _stats(get_variant(a, base, "A"), bs, "A"))
                rb = ratio_stats(_stats(get_variant(b, cand, "B"), bs, "B"), _stats(get_variant(b, base, "B"), bs, "B"))
                tallies["ratio_cases"] += 1
                tallies["ratio_in_ci"] += _inside(rb[0], ra)
                ra_blocks = ratio_stats(_stats(get_variant(ab, cand, "A"), bs, "A"),
                                        _stats(get_variant(ab, base, "A"), bs, "A"))
                tallies["blocks_ratio_in_ci"] += _inside(rb[0], ra_blocks)
                ra_paired = paired_ratio_stats(get_variant(a, cand, "A")["latency_ms"][bs],
                                               get_variant(a, base, "A")["latency_ms"][bs])
                tallies["paired_ratio_in_ci"] += _inside(rb[0], ra_paired)
                rec["p50"][f"ratio/b{bs}"] = [ra[0], rb[0], ra[1], ra[2], ra_blocks[1], ra_blocks[2], ra_paired[1],
                                              ra_paired[2]]
        rec["block_p50"] = {f"{r_}/{v['name']}/b{bs}": v["latency_ms"][bs]["block_p50"]
                            for r_, rep in (("A", a), ("B", b)) for v in rep["variants"] for bs in v["latency_ms"]}
        records.append(rec)
        print(f"repeat {i + 1}/{repeats}: ratio check {'pass' if ratio.passed else 'FAIL'}, absolute check "
              f"{'pass' if absolute.passed else 'FAIL'} ({time.perf_counter() - start:.0f}s)", flush=True)
    load = os.getloadavg()
    return {"artifacts": artifacts, "repeats": repeats, "runs": runs, "rounds": rounds, "warmup": warmup,
            "threads": threads, "batch_sizes": list(batch_sizes), "max_latency_regression": pct,
            "load_average_at_end": load, "tallies": tallies, "records": records}


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
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = run(args.artifacts, repeats=args.repeats, batch_sizes=tuple(int(b) for b in args.batch.split(",")),
                 runs=args.runs, rounds=args.rounds, warmup=args.warmup, threads=args.threads,
                 pct=args.max_latency_regression)
    t = result["tallies"]
    print(f"check passes, ratio mode (default): {t['check_ratio_pass']}/{t['pairs']}")
    print(f"check passes, absolute mode: {t['check_absolute_pass']}/{t['pairs']}")
    print(f"repeat p50 inside the first bench's CI95: {t['p50_in_ci']}/{t['p50_cases']} "
          f"({100 * t['p50_in_ci'] / max(1, t['p50_cases']):.0f}%)")
    print(f"repeat ratio inside the first bench's ratio CI95: {t['ratio_in_ci']}/{t['ratio_cases']} "
          f"({100 * t['ratio_in_ci'] / max(1, t['ratio_cases']):.0f}%)")
    print("with the block-bootstrap CI (proposed for bench/latency.py), same runs:")
    print(f"  check passes, ratio mode: {t['blocks_check_ratio_pass']}/{t['pairs']}; absolute mode: "
          f"{t['blocks_check_absolute_pass']}/{t['pairs']}")
    print(f"  repeat p50 inside the CI95: {t['blocks_p50_in_ci']}/{t['p50_cases']} "
          f"({100 * t['blocks_p50_in_ci'] / max(1, t['p50_cases']):.0f}%); ratio inside the ratio CI95: "
          f"{t['blocks_ratio_in_ci']}/{t['ratio_cases']} ({100 * t['blocks_ratio_in_ci'] / max(1, t['ratio_cases']):.0f}%)")
    print("ratio with the per-round paired CI (block_p50 in the report), same runs:")
    print(f"  check passes, ratio mode: {t['paired_check_ratio_pass']}/{t['pairs']}; ratio inside the CI95: "
          f"{t['paired_ratio_in_ci']}/{t['ratio_cases']} ({100 * t['paired_ratio_in_ci'] / max(1, t['ratio_cases']):.0f}%)")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in result['load_average_at_end'])}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
