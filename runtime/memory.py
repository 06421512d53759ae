"""Peak host memory (RSS, MiB) of inference through runtime/, each artifact in a fresh child process, so one
variant's allocations (or the parent's torch) cannot hide another's. Linux only (VmHWM).

    python -m runtime.memory ARTIFACT FEEDS.npz [--threads 2] [--runs 10]     (prints one JSON line)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from runtime.loader import child_python


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure_peak_rss(path: Path, feeds: Mapping[str, np.ndarray], *, threads: int, runs: int = 10,
                     timeout_s: float = 300.0) -> dict[str, float] | None:
    """{"peak_rss_mib", "before_load_mib"} of a child that loads `path` and runs `feeds` (by input name) `runs`
    times. None, with a warning, when it cannot be measured: a memory probe never sinks a benchmark.

    VmHWM, not getrusage: ru_maxrss survives exec and reported the parent's size (a torch-laden pytest, 113 MB)
    before anything was loaded. The growth over `before_load_mib` includes the backend library itself
    (onnxruntime ~28 MiB); for TensorRT it is host memory only."""
    if not Path("/proc/self/status").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        feeds_path = Path(tmp) / "feeds.npz"
        names = list(feeds)
        np.savez(feeds_path, **{f"f{i}": np.asarray(feeds[n]) for i, n in enumerate(names)})
        (Path(tmp) / "names.json").write_text(json.dumps(names))
        out = Path(tmp) / "result.json"
        cmd, env = child_python("runtime.memory", str(Path(path).resolve()), str(feeds_path), "--threads", str(threads),
                                "--runs", str(runs), "--out", str(out))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                raise RuntimeError(last)
            return json.loads(out.read_text())
        except subprocess.TimeoutExpired:
            why = f"the child did not finish within {timeout_s:.0f} s"
        except (OSError, ValueError, RuntimeError) as e:
            why = str(e)
    print(f"  peak memory of {Path(path).name} not measured: {why}", file=sys.stderr)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("feeds", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from runtime import load

    names = json.loads((args.feeds.parent / "names.json").read_text())
    with np.load(args.feeds, allow_pickle=False) as z:
        feeds = {name: z[f"f{i}"] for i, name in enumerate(names)}
    before = _status_mib("VmRSS")  # interpreter, numpy and runtime/ imported; load() imports the backend
    with load(args.artifact, threads=args.threads) as runner:
        for _ in range(args.runs):
            runner.run_raw(feeds)
    result = json.dumps({"peak_rss_mib": round(_status_mib("VmHWM"), 2), "before_load_mib": round(before, 2)})
    if args.out:
        args.out.write_text(result)
    print(result)


if __name__ == "__main__":
    main()
