"""`compress bench`: benchmark existing artifacts on their own, without the pipeline (and without torch).

    report = bench_artifacts([("baseline", "fp32.onnx"), ("compressed", "int8.onnx")], data="fashion-mnist")
    write_all(report, Path("out"))   # report.json, report.md, report.html

The report has the pipeline's schema (variants, comparison, environment), so `compress check` reads both.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench import environment
from bench.datasets import Split
from bench.formatting import drop_interval, fmt_bytes, memory_batch, peak_rss
from bench.report import SCHEMA_VERSION, Variant, bench_variants, compare
from common.errors import CompressError

SYNTHETIC_SAMPLES = 64


class BenchError(CompressError):
    """The artifacts or options given to `compress bench` cannot be benchmarked; the message says why."""


def parse_artifacts(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """`PATH` or `NAME=PATH` -> (name, path); unnamed artifacts are named after their file, made unique."""
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or os.sep in name:
            name, path = "", spec
        p = Path(path)
        if not p.is_file():
            raise BenchError(f"artifact {p} does not exist or is not a file")
        if not name:
            stem = p.name.removesuffix(p.suffix)
            name = stem if stem != "model" or p.parent.name in ("", ".") else f"{p.parent.name}-{stem}"
        base, i = name, 2
        while name in seen:
            name, i = f"{base}-{i}", i + 1
        seen.add(name)
        out.append((name, p))
    if not out:
        raise BenchError("give at least one artifact to benchmark, e.g. compress bench model.onnx")
    return out


def load_split(data: str | None, limit: int | None, input_shape: tuple, dtype: np.dtype) -> tuple[Split, dict, bool]:
    """The evaluation split: Fashion-MNIST's test split, or synthetic inputs (no accuracy) when data is None."""
    if data is not None:
        from bench.datasets import (FASHION_MNIST_MEAN, FASHION_MNIST_STD, DatasetError, load_fashion_mnist_raw,
                                    normalize_images)

        try:
            raw = load_fashion_mnist_raw(None if data == "fashion-mnist" else data)
        except DatasetError as e:
            raise BenchError(str(e)) from None
        images, labels = raw["test_images"], raw["test_labels"]
        if limit:
            images, labels = images[:limit], labels[:limit]
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes() + labels.tobytes()).hexdigest()[:16]
        split = Split(normalize_images(images, FASHION_MNIST_MEAN, FASHION_MNIST_STD), labels)
        return split, {"name": "fashion-mnist", "split": "test", "samples": len(split), "fingerprint": digest}, True
    dims = list(input_shape)
    if any(d is None for d in dims[1:]):
        raise BenchError(f"the first artifact's input has dynamic dimensions {dims}; pass --data so that real "
                         "inputs fix its shape")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SYNTHETIC_SAMPLES, *dims[1:])).astype(dtype)
    split = Split(x, np.zeros(SYNTHETIC_SAMPLES, dtype=np.int64))
    return split, {"name": "synthetic", "split": "random normal inputs (no accuracy)", "samples": SYNTHETIC_SAMPLES,
                   "fingerprint": None}, False


def bench_artifacts(artifacts: Sequence[tuple[str, str | os.PathLike]], *, data: str | None = None,
                    limit: int | None = None, batch_sizes: Sequence[int] = (1, 32), threads: int = 2,
                    runs: int = 200, warmup: int = 10, rounds: int = 8, baseline: str | None = None,
                    candidate: str | None = None, run_noise_pct: float = 0.0) -> dict[str, Any]:
    """Accuracy (with `data`) and interleaved latency of every artifact in one run, as a schema-1 report.

    The baseline (default: the first artifact) is timed in the same run, so `comparison.speedup_p50` is a
    within-run ratio; the candidate (default: the last other artifact) is what `compress check` gates.
    """
    from runtime import load

    pairs = [(n, Path(p)) for n, p in artifacts]
    names = [n for n, _ in pairs]
    if not pairs:
        raise BenchError("give at least one artifact to benchmark")
    baseline = baseline or names[0]
    for role, name in (("--baseline", baseline), ("--candidate", candidate)):
        if name is not None and name not in names:
            raise BenchError(f"{role} {name!r} is not one of the artifacts: {', '.join(names)}")
    if candidate is None:
        others = [n for n in names if n != baseline]
        candidate = others[-1] if others else baseline
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise BenchError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if runs < 1 or rounds < 1 or warmup < 0 or threads < 1:
        raise BenchError("--runs, --rounds and --threads must be >= 1 and --warmup >= 0")
    if not 0 <= run_noise_pct < 100:
        raise BenchError(f"--run-noise-pct must be in [0, 100), got {run_noise_pct}")
    if runs < rounds:
        raise BenchError(f"--runs {runs} must be at least --rounds {rounds} (runs are split into rounds)")
    pairs.sort(key=lambda np_: np_[0] != baseline)  # the baseline first: top-1 agreement is measured against it

    with load(pairs[0][1], threads=threads) as runner:
        spec = runner.inputs[0]
    split, dataset, has_accuracy = load_split(data, limit, spec.shape, spec.dtype)
    variants = [Variant(name, path, _precision(path), "baseline" if name == baseline else "") for name, path in pairs]
    start = time.perf_counter()
    rows = bench_variants(variants, split, batch_sizes=tuple(batch_sizes), warmup=warmup, runs=runs, rounds=rounds,
                          threads=threads, run_noise_pct=run_noise_pct)
    wall = round(time.perf_counter() - start, 2)
    if not has_accuracy:  # random inputs: right and wrong mean nothing
        for r in rows:
            r["accuracy"] = None
            r.pop("discordant_vs_baseline", None)
    comparison: dict[str, Any] = {}
    if candidate != baseline:
        if has_accuracy:
            comparison = compare(rows, baseline, candidate)
        else:
            comparison = compare([{**r, "accuracy": 0.0} for r in rows], baseline, candidate)
            comparison["accuracy_drop_pt"] = None
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "edge-compress", "command": "compress bench"},
        "title": f"compress bench: {', '.join(names)}",
        "target": "cpu",
        "dataset": dataset,
        "environment": {**environment.describe(threads), "timing": f"blocks of runs cycled per variant, "
                        f"{rounds} rounds, {warmup} warm-up runs per block", "run_noise_pct": run_noise_pct},
        "variants": rows,
        "comparison": comparison,
        "stages": [{"name": "bench", "cached": False, "wall_s": wall, "metrics": {}}],
    }


def _precision(path: Path) -> str:
    """int8 when the graph holds quantized ops, else fp32 (read from the ONNX file if onnx is installed)."""
    try:
        import onnx
    except ImportError:
        return "int8" if "int8" in path.name else "unknown"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the runtime reports unreadable files itself
        return "unknown"
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
              "DynamicQuantizeLinear"}:
        return "int8"
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return "fp16" if fp16 else "fp32"


def to_markdown(report: dict) -> str:
    """report.md for a standalone bench (no recipe, accuracy may be absent)."""
    variants = report["variants"]
    batches = list(variants[0]["latency_ms"])
    c = report.get("comparison") or {}
    base = next((v for v in variants if v["name"] == c.get("baseline")), variants[0])
    env = report["environment"]
    header = ["variant", "precision", "accuracy", "top-1 agreement", "size"] + \
             [f"p50 b{b} (ms) [CI95]" for b in batches] + [f"speed-up b{b}" for b in batches]
    top = memory_batch(variants)
    header += [f"peak RSS b{top}"] if top else []
    lines = [f"# {report.get('title', 'compress bench')}", "",
             f"Data: {report['dataset']['name']} ({report['dataset']['samples']} samples); {env['cpu']}, "
             f"{env['cores']} cores, {env['threads']} threads; onnxruntime {env['versions'].get('onnxruntime', '?')}; "
             f"{env.get('timing', '')}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v in variants:
        acc = "-" if v.get("accuracy") is None else f"{v['accuracy']:.4f}"
        lat = [f"{v['latency_ms'][b]['p50']:.3f} [{v['latency_ms'][b]['p50_ci95'][0]:.3f}, "
               f"{v['latency_ms'][b]['p50_ci95'][1]:.3f}]" for b in batches]
        speed = [f"{base['latency_ms'][b]['p50'] / v['latency_ms'][b]['p50']:.2f}x" for b in batches]
        row = [v["name"], v["precision"], acc, f"{v['top1_agreement_vs_baseline']:.4f}", fmt_bytes(v["size_bytes"])]
        lines.append("| " + " | ".join(row + lat + speed + ([peak_rss(v, top)] if top else [])) + " |")
    if c:
        speed = ", ".join(f"batch {b}: {r:.2f}x" for b, r in c["speedup_p50"].items())
        drop = "n/a (no --data)" if c.get("accuracy_drop_pt") is None else f"{c['accuracy_drop_pt']:.2f} pt{drop_interval(c)}"
        lines += ["", f"**{c['candidate']} vs {c['baseline']}**: accuracy drop {drop}; p50 speed-up {speed}; "
                  f"{c['size_ratio']:.1f}x smaller."]
    return "\n".join(lines) + "\n"


def write_all(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """report.json, report.md and report.html into `out_dir` (each written atomically)."""
    from bench.html import to_html
    from common.atomic import write_json, write_text

    out = Path(out_dir)
    paths = [out / "report.json", out / "report.md", out / "report.html"]
    write_json(paths[0], report)
    write_text(paths[1], to_markdown(report))
    write_text(paths[2], to_html(report))
    return paths
