"""Peak memory (RSS) of inference through runtime/, each artifact and batch in a fresh child process, so one
variant's allocations (or the parent's torch) cannot hide another's.

    python -m bench.memory ARTIFACT FEEDS.npz [--threads 2] [--runs 10]     (prints one JSON line)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the current memory map; getrusage's ru_maxrss survives exec and
    would report the parent's size at fork (a torch-laden pytest: 113 MB before anything was loaded)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, kB on Linux


def measure_peak_rss(path: Path, feeds: Mapping[str, np.ndarray], *, threads: int, runs: int = 10,
                     timeout_s: float = 300.0) -> dict[str, float] | None:
    """{"peak_rss_mb", "before_load_mb"} of a child that loads `path` and runs `feeds` `runs` times; None
    (with a warning) when the child fails, so a memory probe never sinks a benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        feeds_path = Path(tmp) / "feeds.npz"
        np.savez(feeds_path, **{f"f{i}": np.asarray(a) for i, a in enumerate(feeds.values())})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run([sys.executable, "-m", "bench.memory", str(path), str(feeds_path), "--threads",
                                   str(threads), "--runs", str(runs)], capture_output=True, text=True, env=env,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"  memory of {path.name}: child timed out after {timeout_s:.0f}s", file=sys.stderr)
            return None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  memory of {path.name} not measured: {last}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("feeds", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    from runtime import load

    with np.load(args.feeds, allow_pickle=False) as z:
        arrays = [z[f"f{i}"] for i in range(len(z.files))]
    before = _peak_mb()  # interpreter, numpy and runtime/ imported; the backend is imported by load()
    with load(args.artifact, threads=args.threads) as runner:
        feeds = {spec.name: a for spec, a in zip(runner.inputs, arrays)}
        for _ in range(args.runs):
            runner.run_raw(feeds)
    print(json.dumps({"peak_rss_mb": round(_peak_mb(), 2), "before_load_mb": round(before, 2)}))


if __name__ == "__main__":
    main()
