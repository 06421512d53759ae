"""Fuzz `runtime.load` with mutated artifacts: every file must run or raise the runtime's own error.

    python -m tools.fuzz ARTIFACT --n 10000 --chunk 500 --out fuzz.json

Mutations cycle through four kinds: one bit flipped anywhere, one bit flipped in the first 400 bytes (header and
graph structure), a random byte in the last 600 bytes (nodes, value infos), and the file cut anywhere. Each chunk
runs in a child process that loads the mutated files in-process (no `isolate`): a crash of the native library
would kill that child, and is counted as a host crash. Seeded: the same command mutates the same bytes.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KINDS = ("bit anywhere", "bit in header", "byte in tail", "cut")
OUTCOMES = ("ran", "inference error", "refused in Python", "refused by ONNX Runtime")


def mutate(data: bytes, k: int, rng: random.Random) -> bytes:
    b = bytearray(data)
    mode = k % 4
    if mode == 0:
        pos = rng.randrange(len(b))
        b[pos] ^= 1 << rng.randrange(8)
    elif mode == 1:
        pos = rng.randrange(min(400, len(b)))
        b[pos] ^= 1 << rng.randrange(8)
    elif mode == 2:
        pos = len(b) - 1 - rng.randrange(min(600, len(b)))
        b[pos] = rng.randrange(256)
    else:
        b = b[: rng.randrange(1, len(b))]
    return bytes(b)


def run_chunk(src: Path, work: Path, start: int, n: int, seed: int) -> dict[str, dict[str, int]]:
    """Mutate, load and run files start..start+n-1 in this process; outcome counts per mutation kind."""
    import runtime

    data = src.read_bytes()
    counts: dict[str, dict[str, int]] = {}
    for k in range(start, start + n):
        rng = random.Random(seed * 1_000_003 + k)
        path = work / f"m{k}{src.suffix}"
        path.write_bytes(mutate(data, k, rng))
        try:
            with runtime.load(path) as runner:
                feeds = {s.name: np.zeros([1 if d is None else d for d in s.shape], dtype=s.dtype)
                         for s in runner.inputs}
                try:
                    runner.infer(feeds)
                    outcome = "ran"
                except runtime.RuntimeFailure:
                    outcome = "inference error"
        except runtime.ArtifactError as e:
            outcome = "refused by ONNX Runtime" if "cannot be loaded by ONNX Runtime" in str(e) else "refused in Python"
        kind = counts.setdefault(KINDS[k % 4], {})
        kind[outcome] = kind.get(outcome, 0) + 1
        path.unlink()
    return counts


def fuzz(src: Path, n: int, *, chunk: int = 500, seed: int = 1234, timeout: float = 1800) -> dict:
    """Run `n` mutations in child processes of `chunk` files each; tally outcomes and children that died."""
    repo = str(Path(__file__).resolve().parent.parent)
    totals: dict[str, dict[str, int]] = {}
    crashes = []
    start_time = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as work:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            cmd = [sys.executable, "-m", "tools.fuzz", "--child", str(src), work, str(start), str(size), str(seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=timeout)
            if proc.returncode != 0:
                crashes.append({"start": start, "files": size, "status": proc.returncode,
                                "stderr": proc.stderr.strip().splitlines()[-1:] })
                continue
            for kind, outcomes in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                for outcome, c in outcomes.items():
                    totals.setdefault(kind, {})
                    totals[kind][outcome] = totals[kind].get(outcome, 0) + c
    by_outcome = {o: sum(k.get(o, 0) for k in totals.values()) for o in OUTCOMES}
    return {"artifact": str(src), "bytes": src.stat().st_size, "mutations": n, "seed": seed,
            "tested": sum(by_outcome.values()), "host_crashes": len(crashes), "crashed_chunks": crashes,
            "by_outcome": by_outcome, "by_kind": totals, "wall_s": round(time.perf_counter() - start_time, 1)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        src, work, start, n, seed = argv[1:6]
        print(json.dumps(run_chunk(Path(src), Path(work), int(start), int(n), int(seed))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = fuzz(args.artifact, args.n, chunk=args.chunk, seed=args.seed)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 1 if result["host_crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
