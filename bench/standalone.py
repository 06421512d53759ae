"""`compress bench`: benchmark existing artifacts on their own, without the pipeline (and without torch).

    report = bench_artifacts([("baseline", "fp32.onnx"), ("compressed", "int8.onnx")], data="fashion-mnist")
    write_all(report, Path("out"))   # report.json, report.md, report.html

The report has the pipeline's schema (variants, comparison, environment), so `compress check` reads both.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime import environment
from bench.data.splits import Split
from bench.formatting import drop_interval, fmt_bytes, memory_batch, metric_word, peak_rss
from bench.report import SCHEMA_VERSION, bench_variants, compare
from bench.variants import Variant
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


def load_split(data: str | None, limit: int | None, input_shape: tuple, dtype: np.dtype,
               metadata: dict | None = None) -> tuple[Split, dict, bool]:
    """The evaluation split: Fashion-MNIST's test split, an .npz's rows (`x`, and `y` for accuracy), a folder of
    images (preprocessed as the first artifact's sidecar says; class sub-folders for accuracy), or synthetic inputs
    (no accuracy) when data is None. The path's kind is recognised by bench.data.files. Unlabelled rows come back
    with `y` None."""
    if data is None:
        return synthetic_split(input_shape, dtype)
    from bench.data.files import path_kind
    from bench.data.idx import FASHION_MNIST_DIR

    path = FASHION_MNIST_DIR if data == "fashion-mnist" else Path(data)
    kind = path_kind(path)
    if kind == "csv":
        raise BenchError(f"--data {path}: compress bench scores arrays or images, not texts; pass a text model's "
                         "tokenized inputs with --inputs (latency only)")
    return file_split(path, kind, limit, metadata or {}, input_shape)


def synthetic_split(input_shape: tuple, dtype: np.dtype) -> tuple[Split, dict, bool]:
    dims = list(input_shape)
    if any(d is None for d in dims[1:]):
        raise BenchError(f"the first artifact's input has dynamic dimensions {dims}; pass --data so that real "
                         "inputs fix its shape")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SYNTHETIC_SAMPLES, *dims[1:])).astype(dtype)
    split = Split(x, np.zeros(SYNTHETIC_SAMPLES, dtype=np.int64))
    return split, {"name": "synthetic", "split": "random normal inputs (no accuracy)", "samples": SYNTHETIC_SAMPLES,
                   "fingerprint": None}, False


def bench_image_spec(path: Path, metadata: dict, input_shape: tuple):
    """The sidecar's image preprocessing, or ImageNet's RGB one at the model's static NCHW input size."""
    from runtime.images import CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD, ImageSpec

    spec = ImageSpec.from_sidecar(metadata.get("preprocess") or {})
    if spec is not None:
        return spec
    dims = tuple(input_shape[1:])
    if len(dims) != 3 or dims[0] != 3 or None in dims:
        raise BenchError(f"--data {path}: the first artifact has no sidecar with image preprocessing and its input "
                         f"{list(input_shape)} is not N x 3 x H x W; give model-ready rows as an .npz instead")
    print(f"  {path.name}: no preprocessing in a sidecar: ImageNet's (resize, centre crop {dims[1]}x{dims[2]}, "
          "mean/std) assumed", file=sys.stderr)
    return ImageSpec((dims[1], dims[2]), round(min(dims[1:]) / CROP_FRACTION), IMAGENET_MEAN, IMAGENET_STD)


def file_split(path: Path, kind: str, limit: int | None, metadata: dict,
               input_shape: tuple) -> tuple[Split, dict, bool]:
    """The rows at `path` as bench.data.files reads them (`limit`: the first rows; of an image folder, whose files
    come class by class, a seeded sample); (split, dataset info, labelled). An .npz's `x` is model-ready, read as a
    run reads it; images are preprocessed as the artifact's sidecar declares (ImageNet's way at the model's input
    size without one); IDX files are Fashion-MNIST's test split, standardised as a run standardises it."""
    from bench.data.files import read_data_file
    from bench.data.idx import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    from bench.data.images import read_pixels
    from bench.data.splits import DatasetError, normalize_images

    spec = bench_image_spec(path, metadata, input_shape) if kind == "images" else None
    try:
        found = read_data_file(path, kind=kind, split="test")
        if limit:
            found = found.take(np.sort(np.random.default_rng(0).permutation(len(found))[:limit])
                               if kind == "images" else slice(None, limit))
        x = read_pixels(found.rows, spec) if kind == "images" else found.rows
    except DatasetError as e:
        raise BenchError(f"--data {e}" if kind == "npz" else str(e)) from None
    y = class_ids(path, found, metadata) if kind == "images" else found.y
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + (b"" if y is None else y.tobytes())).hexdigest()
    if kind == "idx":
        x = normalize_images(x, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    what = {"npz": "all rows", "images": "all images", "idx": "test"}[kind]
    info = {"name": "fashion-mnist" if kind == "idx" else path.name,
            "split": what if y is not None else f"{what}, unlabelled", "samples": len(x), "fingerprint": digest[:16]}
    return Split(x, y), info, y is not None


def class_ids(path: Path, found, metadata: dict) -> np.ndarray | None:
    """An image folder's labels as the model numbers its classes: by the sidecar's label names, or the class
    folders in name order when it has none."""
    if found.y is None:
        return None
    names = metadata.get("labels") or list(found.labels)
    unknown = sorted(set(found.labels) - set(names))
    if unknown:
        raise BenchError(f"--data {path}: class folders {', '.join(unknown[:5])} are not among the model's labels")
    return np.asarray([names.index(found.labels[i]) for i in found.y], np.int64)


def agreement_split(split: Split, dataset: dict, baseline: Path, threads: int) -> tuple[Split, np.ndarray]:
    """Unlabelled rows labelled by the baseline's top-1: every accuracy becomes agreement with it."""
    from runtime.measure import predict
    from runtime import load

    with load(baseline, threads=threads) as runner:
        reference = predict(runner, split.x)
    dataset.update(metric="agreement", truth=f"top-1 of the baseline ({baseline.name}); no labels in the file")
    return Split(split.x, reference.argmax(1).astype(np.int64)), reference


def bench_artifacts(artifacts: Sequence[tuple[str, str | os.PathLike]], *, data: str | None = None,
                    limit: int | None = None, batch_sizes: Sequence[int] = (1, 32), threads: int = 2,
                    runs: int = 200, warmup: int = 10, rounds: int = 8, baseline: str | None = None,
                    candidate: str | None = None, run_noise_pct: float = 0.0,
                    inputs: str | os.PathLike | None = None, device=None) -> dict[str, Any]:
    """Accuracy (with `data`) and interleaved latency of every artifact in one run, as a schema-1 report.

    The baseline (default: the first artifact) is timed in the same run, so `comparison.speedup_p50` is a
    within-run ratio; the candidate (default: the last other artifact) is what `compress check` gates.
    `data` may be an .npz (`x`, optional `y`): without `y`, accuracy is top-1 agreement with the baseline, and each
    row has its logit SQNR against it. `inputs`: an .npz with one array per model input, named like them (models
    with several inputs or state): latency only. `device` (bench.device.SshDevice): scored and timed there instead.
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

    variants = [Variant(name, path, _precision(path), "baseline" if name == baseline else "") for name, path in pairs]
    timing = dict(batch_sizes=tuple(batch_sizes), warmup=warmup, runs=runs, rounds=rounds, threads=threads,
                  run_noise_pct=run_noise_pct)
    start = time.perf_counter()
    if inputs is not None:
        if device is not None:
            raise BenchError("--on benches on data (--data or random inputs), not on --inputs, in this version")
        if data is not None:
            raise BenchError("--inputs times models on given inputs (latency only); leave out --data with it")
        rows, dataset = bench_on_inputs(variants, Path(inputs), **timing)
        has_accuracy = False
    else:
        rows, dataset, has_accuracy = _bench_on_data(variants, data, limit, timing, device)
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
    from bench.device import device_line

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "edge-compress", "command": "compress bench"},
        "title": f"compress bench: {', '.join(names)}",
        "target": "cpu",
        "dataset": dataset,
        "accuracy_metric": "top1_agreement_vs_baseline" if dataset.get("metric") == "agreement" else "accuracy",
        "environment": {**environment.describe(threads), "timing": f"blocks of runs cycled per variant, "
                        f"{rounds} rounds, {warmup} warm-up runs per block", "run_noise_pct": run_noise_pct,
                        **({"device": device.environment} if device is not None else {})},
        **({"latency_measured_on": device_line(device.environment)} if device is not None else {}),
        "variants": rows,
        "comparison": comparison,
        "stages": [{"name": "bench", "cached": False, "wall_s": wall, "metrics": {}}],
    }


def _bench_on_data(variants: list, data: str | None, limit: int | None, timing: dict,
                   device=None) -> tuple[list, dict, bool]:
    from runtime import load

    base = variants[0].path
    with load(base, threads=timing["threads"]) as runner:
        specs, metadata = runner.inputs, runner.metadata
    if len(specs) != 1:
        raise BenchError(f"{base.name} takes {len(specs)} inputs ({', '.join(s.name for s in specs)}): pass "
                         "--inputs inputs.npz with one array per input, named like them (latency only)")
    split, dataset, has_accuracy = load_split(data, limit, specs[0].shape, specs[0].dtype, metadata)
    if data is not None and not has_accuracy:
        split, _ = agreement_split(split, dataset, base, timing["threads"])
        has_accuracy = True
    return bench_variants(variants, split, **timing, device=device), dataset, has_accuracy


def read_inputs(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BenchError(f"--inputs {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise BenchError(f"--inputs {path}: not a readable .npz of plain arrays ({type(e).__name__})") from None


def input_feeds(specs, arrays: dict[str, np.ndarray], batch_sizes: tuple[int, ...], where: str) -> dict[int, dict]:
    """Batch size -> feeds for one model: each input's array by name, repeated or cut to the batch along its first
    axis when every input's batch axis is dynamic; the arrays as given (their own batch) otherwise."""
    from runtime.measure import as_model_input

    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise BenchError(f"--inputs {where}: no array for input(s) {', '.join(missing)} (the file holds "
                         f"{', '.join(sorted(arrays)) or 'nothing'}); save one array per model input, named like it")
    given = {s.name: as_model_input(s, arrays[s.name]) for s in specs}
    dynamic = all(s.shape and s.shape[0] is None and given[s.name].ndim >= 1 for s in specs)
    if not dynamic:
        first = given[specs[0].name]
        return {int(first.shape[0]) if first.ndim else 1: given}
    return {b: {n: np.ascontiguousarray(np.resize(a, (b, *a.shape[1:]))) for n, a in given.items()}
            for b in batch_sizes}


def bench_on_inputs(variants: list, path: Path, *, batch_sizes: tuple[int, ...], warmup: int, runs: int,
                    rounds: int, threads: int, run_noise_pct: float) -> tuple[list[dict], dict]:
    """Interleaved latency of every variant on the given inputs (models with several inputs, recurrent state)."""
    import contextlib

    from bench.latency import measure_interleaved
    from runtime import load

    arrays = read_inputs(path)
    feeds, rows = {}, {}
    for v in variants:
        with load(v.path, threads=threads) as runner:
            feeds[v.name] = input_feeds(runner.inputs, arrays, batch_sizes, str(path))
            backend = runner.backend
        rows[v.name] = {"name": v.name, "description": v.description, "artifact": str(v.path), "runtime": backend,
                        "precision": v.precision, "accuracy": None, "top1_agreement_vs_baseline": None,
                        "size_bytes": v.path.stat().st_size, "latency_ms": {}, "memory_mib": {}}

    def opener(v, batch: int):
        @contextlib.contextmanager
        def open_run():
            with load(v.path, threads=threads) as runner:
                yield lambda: runner.run_raw(feeds[v.name][batch])

        return open_run

    for b in sorted({b for f in feeds.values() for b in f}):
        timed = {v.name: opener(v, b) for v in variants if b in feeds[v.name]}
        stats = measure_interleaved(timed, b, warmup=warmup, runs=runs, rounds=rounds, run_noise=run_noise_pct / 100)
        for name, st in stats.items():
            rows[name]["latency_ms"][str(b)] = st.to_dict()
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in sorted(arrays)))
    shapes = ", ".join(f"{k} {list(a.shape)}" for k, a in sorted(arrays.items()))
    rows_given = min((len(a) for a in arrays.values() if a.ndim), default=1)
    dataset = {"name": path.name, "split": f"given inputs ({shapes}); latency only", "samples": rows_given,
               "inputs": sorted(arrays), "fingerprint": digest.hexdigest()[:16]}
    return [rows[v.name] for v in variants], dataset


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
    env = {**report["environment"], **report["environment"].get("device", {})}  # --on: the device's figures
    agreement = metric_word(report) == "agreement"
    sqnr = any("logit_sqnr_db_vs_baseline" in v for v in variants)
    header = ["variant", "precision", "agreement" if agreement else "accuracy", "top-1 agreement", "size"] + \
             [f"p50 b{b} (ms) [CI95]" for b in batches] + [f"speed-up b{b}" for b in batches]
    top = memory_batch(variants)
    header += [f"peak RSS b{top}"] if top else []
    header += ["logit SQNR vs baseline (dB)"] if sqnr else []
    lines = [f"# {report.get('title', 'compress bench')}", "",
             f"Data: {_data_line(report['dataset'])}; {env['cpu']}, "
             f"{env['cores']} cores, {env['threads']} threads; onnxruntime {env['versions'].get('onnxruntime', '?')}; "
             f"{env.get('timing', '')}.", *([f"Measured on: {report['latency_measured_on']}."]
                                             if report.get("latency_measured_on") else []), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v in variants:
        acc = "-" if v.get("accuracy") is None else f"{v['accuracy']:.4f}"
        lat = [f"{v['latency_ms'][b]['p50']:.3f} [{v['latency_ms'][b]['p50_ci95'][0]:.3f}, "
               f"{v['latency_ms'][b]['p50_ci95'][1]:.3f}]" for b in batches]
        speed = [f"{base['latency_ms'][b]['p50'] / v['latency_ms'][b]['p50']:.2f}x" for b in batches]
        agree = v.get("top1_agreement_vs_baseline")
        row = [v["name"], v["precision"], acc, "-" if agree is None else f"{agree:.4f}", fmt_bytes(v["size_bytes"])]
        db = v.get("logit_sqnr_db_vs_baseline")
        extra = ([peak_rss(v, top)] if top else []) + (["-" if db is None else f"{db:.1f}"] if sqnr else [])
        lines.append("| " + " | ".join(row + lat + speed + extra) + " |")
    if c:
        speed = ", ".join(f"batch {b}: {r:.2f}x" for b, r in c["speedup_p50"].items())
        drop = "n/a (no --data)" if c.get("accuracy_drop_pt") is None else f"{c['accuracy_drop_pt']:.2f} pt{drop_interval(c)}"
        measure = "agreement" if agreement else "accuracy"
        lines += ["", f"**{c['candidate']} vs {c['baseline']}**: {measure} drop {drop}; p50 speed-up {speed}; "
                  f"{c['size_ratio']:.1f}x smaller."]
    return "\n".join(lines) + "\n"


def _data_line(dataset: dict) -> str:
    if dataset.get("inputs"):
        return f"{dataset['name']}, {dataset['split']}"
    if dataset.get("metric") == "agreement":
        return (f"{dataset['name']} ({dataset['samples']} unlabelled samples; agreement = top-1 agreement with the "
                "baseline)")
    return f"{dataset['name']} ({dataset['samples']} samples)"


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
