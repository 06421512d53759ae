"""The device's half of `compress bench --on HOST`: score and time the artifacts of a job folder on this machine.

    python -m runtime.device_bench describe          one JSON line: this machine and its runtime
    python -m runtime.device_bench run FOLDER        FOLDER/job.json + rows.npz -> FOLDER/out/result.{json,npz}

Torch-free: it needs this package, numpy and the artifacts' backends. It measures (logits on the rows, raw timing
blocks cycled as the local bench cycles them, peak RSS); the statistics are computed on the machine that asked,
with the same code as a local bench. Progress goes to stderr, one line per timed block.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np

PROTOCOL = 1


def describe(threads: int = 1, providers_used: list[str] | None = None) -> dict:
    import runtime
    from runtime import environment

    out = environment.describe(threads, providers_used)
    out["versions"]["edge-compress-runtime"] = runtime.__version__
    out["runtime_path"] = str(Path(runtime.__file__).resolve().parent)
    out["python_executable"] = sys.executable
    out["protocol"] = PROTOCOL
    return out


def _open(path: Path, threads: int):
    """The artifact on this device's CPU: an .onnx on ONNX Runtime's CPU provider whatever its sidecar names."""
    from runtime import load

    if path.suffix == ".onnx":
        return load(path, threads=threads, providers=["CPUExecutionProvider"])
    return load(path, threads=threads)


def run_job(folder: Path) -> None:
    from runtime.measure import fixed_batch, image_feeds, interleaved_blocks, predict, timed_batches
    from runtime.memory import measure_peak_rss

    job = json.loads((folder / "job.json").read_text())
    if job.get("protocol") != PROTOCOL:
        raise SystemExit(f"job protocol {job.get('protocol')} is not this runtime's ({PROTOCOL}); install the "
                         "toolkit's version of edge-compress-runtime on the device")
    threads, variants = job["threads"], job["variants"]
    with np.load(folder / "rows.npz", allow_pickle=False) as z:
        x, extra = z["x"], (z["x_extra"] if "x_extra" in z.files else None)
    arrays: dict[str, np.ndarray] = {}
    info, specs, fixed = [], {}, {}
    for i, v in enumerate(variants):
        with _open(folder / v["path"], threads) as runner:
            arrays[f"logits/{i}"] = predict(runner, x)
            if extra is not None:
                arrays[f"extra/{i}"] = predict(runner, extra)
            specs[i], fixed[i] = runner.inputs, fixed_batch(runner)
            info.append({"backend": runner.backend, "providers": list(getattr(runner, "providers", None) or [])})
        print(f"scored {v['name']}", file=sys.stderr, flush=True)
    per_batch = any(v.get("per_batch") for v in variants)
    batches = tuple(job["batch_sizes"]) if per_batch else timed_batches(tuple(job["batch_sizes"]), set(fixed.values()))

    def path_at(v: dict, batch: int) -> Path:
        return folder / (v["per_batch"][str(batch)] if v.get("per_batch") else v["path"])

    def feeds_at(i: int, batch: int) -> dict:
        v = variants[i]
        if v.get("per_batch"):
            with _open(path_at(v, batch), threads) as runner:
                return image_feeds(runner.inputs, x, batch)
        return image_feeds(specs[i], x, batch)

    def opener(i: int, batch: int):
        feeds = feeds_at(i, batch)

        @contextlib.contextmanager
        def open_run():
            with _open(path_at(variants[i], batch), threads) as runner:
                yield lambda: runner.run_raw(feeds)

        return open_run

    def runs_at(i: int, batch: int) -> bool:
        v = variants[i]
        return str(batch) in v["per_batch"] if v.get("per_batch") else fixed[i] in (None, batch)

    timed = {b: [i for i in range(len(variants)) if runs_at(i, b)] for b in batches}
    for b, at_b in timed.items():
        blocks = interleaved_blocks({str(i): opener(i, b) for i in at_b}, warmup=job["warmup"], runs=job["runs"],
                                    rounds=job["rounds"], on_block=lambda: print(".", end="", file=sys.stderr,
                                                                                flush=True))
        for i, per_round in blocks.items():
            for r, block in enumerate(per_round):
                arrays[f"blocks/{b}/{i}/{r}"] = block
        print(f" batch {b} timed", file=sys.stderr, flush=True)
    top = max(batches)
    memory = {str(i): measure_peak_rss(path_at(variants[i], top), feeds_at(i, top), threads=threads)
              for i in timed[top]}
    used = sorted({p for d in info for p in d["providers"] if p.endswith("ExecutionProvider")})
    result = {"protocol": PROTOCOL, "variants": info, "batches": list(batches), "top": top, "memory": memory,
              "environment": describe(threads, used)}
    out = folder / "out"
    out.mkdir(exist_ok=True)
    np.savez(out / "result.npz", **arrays)
    (out / "result.json").write_text(json.dumps(result))


def main(argv: list[str]) -> int:
    if argv[:1] == ["describe"]:
        print(json.dumps(describe()))
        return 0
    if argv[:1] == ["run"] and len(argv) == 2:
        try:
            run_job(Path(argv[1]))
        except Exception as e:  # noqa: BLE001 - the asking machine reports the last line
            print(f"\n{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", file=sys.stderr)
            return 1
        return 0
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
