"""Accuracy-aware INT8 search: try calibration methods, then keep the most sensitive layers in float, and ship
the fastest candidate whose validation accuracy stays within the bar of its FP32 source."""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.compare import sqnr_db, top1_agreement
from common.errors import GateFailed
from compress.quantize import preprocess_for_quantization, quantizable_nodes, quantize_static_qdq
from compress.recipe import QuantConfig


class SearchFailed(GateFailed):
    """No candidate met the bar; `result` holds every candidate tried and the sensitivity table."""

    def __init__(self, result: "SearchResult", message: str) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Candidate:
    name: str
    calibration: str
    float_nodes: tuple[str, ...]
    path: str
    val_accuracy: float
    accuracy_drop_pt: float
    agreement: float
    p50_ms: float = math.nan
    meets_bar: bool = False


@dataclass(frozen=True)
class SearchResult:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    sensitivity: tuple[dict, ...]
    fp32_val_accuracy: float
    fp32_p50_ms: float = math.nan  # the FP32 source, timed beside the candidates

    @property
    def fp32_is_faster(self) -> bool:
        """INT8 that does not pay: the FP32 source beats the chosen candidate by more than the noise (seen with
        very narrow CNNs, where the Q/DQ work outweighs the int8 kernels)."""
        return self.chosen.meets_bar and self.fp32_p50_ms < self.chosen.p50_ms * (1 - NOISE)

    def to_dict(self) -> dict:
        rows = [{k: v for k, v in asdict(c).items() if k != "path"} for c in self.candidates]
        return {"chosen": self.chosen.name, "fp32_val_accuracy": self.fp32_val_accuracy,
                "fp32_p50_ms": None if math.isnan(self.fp32_p50_ms) else round(self.fp32_p50_ms, 4),
                "fp32_is_faster": self.fp32_is_faster,
                "candidates": rows, "sensitivity": list(self.sensitivity)}


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    from bench.accuracy import predict
    from runtime import load

    with load(path) as runner:
        return predict(runner, x)


def layer_sensitivity(pre_path: Path, calib: np.ndarray, x: np.ndarray, reference: np.ndarray, cfg: QuantConfig,
                      workdir: Path) -> list[dict]:
    """Quantize one layer at a time and measure the SQNR of the logits: the lower, the more sensitive."""
    rows = []
    for node, op in quantizable_nodes(pre_path):
        path = workdir / "sensitivity.onnx"
        quantize_static_qdq(pre_path, path, calib, cfg, only_nodes=(node,), preprocessed=True)
        logits = _predict(path, x)
        rows.append({"node": node, "op": op, "sqnr_db": round(sqnr_db(reference, logits), 2),
                     "top1_agreement": top1_agreement(reference, logits)})
    return sorted(rows, key=lambda r: r["sqnr_db"])


def latencies(paths: dict[str, Path], make_feeds: Callable[[Any], dict], batch: int, threads: int) -> dict[str, float]:
    """p50 ms of each model, interleaved in one run; `make_feeds(runner)` gives the inputs to time."""
    from bench.latency import measure_interleaved
    from runtime import load

    def opener(path: Path):
        @contextlib.contextmanager
        def open_run():
            with load(path, threads=threads) as runner:
                feeds = make_feeds(runner)
                yield lambda: runner.run_raw(feeds)

        return open_run

    stats = measure_interleaved({n: opener(p) for n, p in paths.items()}, batch, warmup=10, runs=120, rounds=2)
    return {n: s.p50 for n, s in stats.items()}


def search_int8(fp32_path: Path, out_path: Path, calib: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                cfg: QuantConfig, workdir: Path, *, threads: int = 2,
                qat: Callable[[Path], Path] | None = None) -> SearchResult:
    """Write the chosen INT8 model to `out_path`. Raises SearchFailed (best model still written) if none meets
    `cfg.max_accuracy_drop`.

    `qat(workdir)`, when given, fine-tunes with fake quantization and returns a float ONNX to quantize; it runs
    only when post-training quantization and float fallback both miss the bar.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pre = workdir / "pre.onnx"
    preprocess_for_quantization(fp32_path, pre)
    reference = _predict(fp32_path, val_x)
    fp32_acc = float((reference.argmax(1) == val_y).mean())
    candidates: list[Candidate] = []

    def evaluate(name: str, calibration: str, float_nodes: tuple[str, ...], source: Path = pre) -> Candidate:
        path = workdir / f"{name}.onnx"
        quantize_static_qdq(source, path, calib, _with(cfg, calibration), exclude_nodes=float_nodes,
                            preprocessed=source == pre)
        logits = _predict(path, val_x)
        acc = float((logits.argmax(1) == val_y).mean())
        drop = 100.0 * (fp32_acc - acc)
        cand = Candidate(name, calibration, float_nodes, str(path), acc, round(drop, 4),
                         top1_agreement(reference, logits),
                         meets_bar=drop <= cfg.max_accuracy_drop + 1e-9)
        candidates.append(cand)
        return cand

    methods = [cfg.calibration] + ([m for m in ("minmax", "entropy", "percentile") if m != cfg.calibration]
                                   if cfg.search else [])
    for method in methods:
        evaluate(f"ptq-{method}", method, ())
    sensitivity: list[dict] = []
    if cfg.search and not any(c.meets_bar for c in candidates) and cfg.max_fallback_layers > 0:
        best_method = max(candidates, key=lambda c: c.val_accuracy).calibration
        subset = slice(0, min(len(val_x), 1000))
        sensitivity = layer_sensitivity(pre, calib, val_x[subset], reference[subset], _with(cfg, best_method), workdir)
        for k in range(1, min(cfg.max_fallback_layers, len(sensitivity)) + 1):
            cand = evaluate(f"fallback-{k}", best_method, tuple(r["node"] for r in sensitivity[:k]))
            if cand.meets_bar:
                break
    if cfg.search and qat is not None and cfg.qat_epochs > 0 and not any(c.meets_bar for c in candidates):
        evaluate("qat", "minmax", (), source=qat(workdir))  # minmax matches the ranges QAT trained with
    # Calibration and QAT change scales and weights, not the graph: one latency per set of float layers.
    structures = {c.float_nodes: Path(c.path) for c in reversed(candidates)}
    names = {nodes: f"structure-{i}" for i, nodes in enumerate(structures)}
    sample = np.ascontiguousarray(val_x[:1])
    p50 = latencies({"fp32": fp32_path, **{names[n]: p for n, p in structures.items()}},
                    lambda r: {r.inputs[0].name: sample}, 1, threads)
    candidates = [Candidate(**{**asdict(c), "p50_ms": round(p50[names[c.float_nodes]], 4)}) for c in candidates]
    chosen = choose(candidates)
    _copy(Path(chosen.path), out_path)
    result = SearchResult(chosen, tuple(candidates), tuple(sensitivity), fp32_acc, p50["fp32"])
    if not chosen.meets_bar:
        print(format_table(result), file=sys.stderr)
        raise SearchFailed(result,
            f"no INT8 candidate stayed within quantize.max_accuracy_drop={cfg.max_accuracy_drop} pt of FP32 "
            f"({fp32_acc:.4f} on validation); the most accurate ({chosen.name}, drop {chosen.accuracy_drop_pt:.2f} pt) "
            f"is saved as {out_path}"
        )
    return result


NOISE = 0.10  # ratios measured within one run on these machines held to about +-10 %


def choose(candidates: list[Candidate]) -> Candidate:
    """The fastest candidate within the bar; latencies within the noise count as equal and the more accurate
    (then the one with fewer float layers) wins. With none within the bar, the most accurate."""
    passing = [c for c in candidates if c.meets_bar]
    if not passing:
        return max(candidates, key=lambda c: c.val_accuracy)
    fastest = min(c.p50_ms for c in passing)
    tied = [c for c in passing if c.p50_ms * (1 - NOISE) <= fastest]
    return max(tied, key=lambda c: (c.val_accuracy, -len(c.float_nodes)))


def format_table(result: SearchResult) -> str:
    lines = [f"{'candidate':<14} {'calibration':<11} {'float layers':>12} {'val acc':>8} {'drop pt':>8} "
             f"{'p50 ms':>8}  bar"]
    for c in result.candidates:
        mark = "*" if c is result.chosen or c.name == result.chosen.name else " "
        lines.append(f"{c.name:<14} {c.calibration:<11} {len(c.float_nodes):>12} {c.val_accuracy:>8.4f} "
                     f"{c.accuracy_drop_pt:>8.2f} {c.p50_ms:>8.3f}  {'ok' if c.meets_bar else 'miss'} {mark}")
    return "\n".join(lines)


def _with(cfg: QuantConfig, calibration: str) -> QuantConfig:
    import dataclasses

    return dataclasses.replace(cfg, calibration=calibration)


def _copy(src: Path, dst: Path) -> None:
    import shutil

    from common.atomic import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
