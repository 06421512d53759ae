"""What `runtime/` costs on top of ONNX Runtime: runner.infer() against a raw InferenceSession.run.

    python -m tools.overhead MODEL.onnx [--threads 1] [--runs 5000] [--rounds 10] [--batch 1] [--json]

Both sides run the same model at the same batch with the same session options. Each is timed in its own
blocks (warm-up, then runs), cycled raw, runner, raw, runner, ... with a fresh session per block, so that
idle ONNX Runtime threads of one side never spin against the other (see bench/latency.py). Reported: the
medians, their ratio and absolute difference in microseconds, and the cost of `validate()` alone.
Goal: the runner's median within 5 % or 20 us of the raw session's.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

GOAL_RATIO = 1.05
GOAL_DIFF_US = 20.0


def _inputs(runner, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in runner.inputs:
        shape = [batch if i == 0 and d is None else (1 if d is None else d) for i, d in enumerate(s.shape)]
        if np.issubdtype(s.dtype, np.floating):
            feeds[s.name] = rng.standard_normal(shape).astype(s.dtype)
        else:
            feeds[s.name] = np.zeros(shape, dtype=s.dtype)
    return feeds


def _median_us(run, warmup: int, runs: int) -> float:
    from runtime.measure import time_block

    return float(np.median(time_block(run, warmup, runs)) * 1000.0)


def measure_overhead(model: str | os.PathLike, *, threads: int = 1, batch: int = 1, runs: int = 5000,
                     rounds: int = 10, warmup: int = 200, spinning: bool = True) -> dict[str, Any]:
    """Median latency of runner.infer() and of a raw onnxruntime session on `model`, in one interleaved run."""
    import onnxruntime as ort

    import runtime
    from runtime.environment import describe
    from runtime.onnx_backend import disabled_optimizers
    from bench.latency import measure_interleaved

    path = Path(model)
    with runtime.load(path, threads=threads, spinning=spinning) as probe:
        feeds = _inputs(probe, batch)
        names = [o.name for o in probe.outputs]
        validate_us = _median_us(lambda: probe.validate(feeds), warmup, runs)
        wrapped = probe.infer(feeds)

    def raw_session():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]  # the runner's own choice of ORT optimizers, so only the wrapper differs
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers,
                                    disabled_optimizers=disabled_optimizers(providers))

    @contextlib.contextmanager
    def open_raw():
        session = raw_session()
        yield lambda: session.run(None, feeds)

    @contextlib.contextmanager
    def open_runner():
        with runtime.load(path, threads=threads, spinning=spinning) as runner:
            yield lambda: runner.infer(feeds)

    direct = raw_session().run(names, feeds)
    same = all(np.array_equal(a, wrapped[n]) for a, n in zip(direct, names))
    start = time.perf_counter()
    stats = measure_interleaved({"raw": open_raw, "runner": open_runner}, batch, warmup=warmup, runs=runs,
                                rounds=rounds)
    raw_us, runner_us = stats["raw"].p50 * 1000.0, stats["runner"].p50 * 1000.0
    diff = runner_us - raw_us
    ratio = runner_us / raw_us
    return {
        "model": str(path),
        "batch": batch,
        "threads": threads,
        "spinning": spinning,
        "runs_per_side": stats["raw"].runs,
        "rounds": rounds,
        "raw_p50_us": round(raw_us, 2),
        "runner_p50_us": round(runner_us, 2),
        "raw_p50_ci95_us": [round(v * 1000.0, 2) for v in stats["raw"].p50_ci95],
        "runner_p50_ci95_us": [round(v * 1000.0, 2) for v in stats["runner"].p50_ci95],
        "raw_p90_us": round(stats["raw"].p90 * 1000.0, 2),
        "runner_p90_us": round(stats["runner"].p90 * 1000.0, 2),
        "ratio": round(ratio, 4),
        "diff_us": round(diff, 2),
        "validate_p50_us": round(validate_us, 2),
        "outputs_identical": same,
        "within_goal": bool(ratio <= GOAL_RATIO or diff <= GOAL_DIFF_US),
        "goal": f"ratio <= {GOAL_RATIO} or difference <= {GOAL_DIFF_US:.0f} us at the median",
        "wall_s": round(time.perf_counter() - start, 2),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "environment": describe(threads),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"runtime overhead on {r['model']} (batch {r['batch']}, {r['threads']} thread(s), "
        f"{r['runs_per_side']} runs per side in {r['rounds']} interleaved rounds)",
        f"  raw onnxruntime   p50 {r['raw_p50_us']:9.2f} us  (95% CI {r['raw_p50_ci95_us'][0]:.2f}-"
        f"{r['raw_p50_ci95_us'][1]:.2f})  p90 {r['raw_p90_us']:.2f} us",
        f"  runtime infer()   p50 {r['runner_p50_us']:9.2f} us  (95% CI {r['runner_p50_ci95_us'][0]:.2f}-"
        f"{r['runner_p50_ci95_us'][1]:.2f})  p90 {r['runner_p90_us']:.2f} us",
        f"  ratio {r['ratio']:.3f}, difference {r['diff_us']:+.2f} us; validate() alone {r['validate_p50_us']:.2f} us",
        f"  goal ({r['goal']}): {'met' if r['within_goal'] else 'NOT met'}; outputs identical: "
        f"{r['outputs_identical']}",
    ]
    load = r.get("load_average")
    cores = r["environment"].get("cores") or 1
    if load and load[0] > cores * 0.75:
        lines.append(f"  note: load average {load[0]:.1f} on {cores} cores; other work was running, figures are noisy")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an .onnx artifact")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5000, help="timed runs per side, split over the rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--no-spinning", action="store_true", help="turn ONNX Runtime's intra-op spinning off")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    from runtime import RuntimeFailure

    try:
        result = measure_overhead(args.model, threads=args.threads, batch=args.batch, runs=args.runs,
                                  rounds=args.rounds, warmup=args.warmup, spinning=not args.no_spinning)
    except RuntimeFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
