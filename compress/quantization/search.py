"""Accuracy- and latency-aware INT8 search: try calibration methods, then keep the most sensitive layers in float,
then time on this machine which op types and which activation flavour pay in INT8 (compress.quantization.latency), and
ship the fastest candidate whose validation accuracy stays within the bar of its FP32 source."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.compare import sqnr_db, top1_agreement
from compress.driver import log
from compress.quantization.candidates import (Candidate, SearchFailed, SearchResult, choose, copy_model, format_table,
                                             latencies)
from compress.quantization.static import preprocess_for_quantization, quantizable_nodes, quantize_static_qdq
from compress.recipe import QuantConfig

SMALL_VAL = 50  # fewer validation rows than this: one row moves accuracy by 2 pt or more; the log says so


@dataclass(frozen=True)
class Judge:
    """Scores candidates on the validation rows (none used for calibration): against the labels, or, with no
    labels, by top-1 agreement with the FP32 source (accuracy = agreement, FP32 scores 1.0)."""
    reference: np.ndarray  # the FP32 source's logits
    labels: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(self.reference)

    @property
    def by(self) -> str:
        return "labels" if self.labels is not None else "fp32 agreement"

    def accuracy(self, logits: np.ndarray) -> float:
        if self.labels is None:
            return top1_agreement(self.reference, logits)
        return float((np.asarray(logits).argmax(1) == np.asarray(self.labels)).mean())


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    from runtime.measure import predict
    from runtime import load

    with load(path) as runner:
        return predict(runner, x)


def layer_sensitivity(pre_path: Path, calib: np.ndarray, x: np.ndarray, reference: np.ndarray, cfg: QuantConfig,
                      workdir: Path) -> list[dict]:
    """Quantize one layer at a time and measure the SQNR of the logits: the lower, the more sensitive."""
    rows = []
    for node, op in quantizable_nodes(pre_path):
        path = workdir / "sensitivity.onnx"
        quantize_static_qdq(pre_path, path, calib, cfg, only_nodes=(node,), preprocessed=True,
                            ranges_cache=ranges_folder(workdir))
        logits = _predict(path, x)
        rows.append({"node": node, "op": op, "sqnr_db": round(sqnr_db(reference, logits), 2),
                     "top1_agreement": top1_agreement(reference, logits)})
    return sorted(rows, key=lambda r: r["sqnr_db"])


def search_int8(fp32_path: Path, out_path: Path, calib: np.ndarray, val_x: np.ndarray, val_y: np.ndarray | None,
                cfg: QuantConfig, workdir: Path, *, threads: int = 2,
                qat: Callable[[Path], Path] | None = None) -> SearchResult:
    """Write the chosen INT8 model to `out_path`. Raises SearchFailed (best model still written) if none meets
    `cfg.max_accuracy_drop` (and `cfg.min_sqnr_db`).

    Every candidate is judged on all of `val_x` (rows the caller did not use for calibration), against `val_y`,
    or with `val_y=None` by top-1 agreement with the FP32 source (drop = 100 * (1 - agreement)); the logit SQNR
    against FP32 is recorded too. The shipped choice is the fastest candidate within the bar (see `choose`):
    latencies within NOISE of the fastest tie, accuracies within one row (1 / len(val_x)) tie, and among ties the
    candidate with the fewest changes from plain PTQ wins, so that a small validation set cannot pick a candidate
    for a difference of a row or two. Fewer than SMALL_VAL rows are logged as such.

    With `cfg.search` and `cfg.latency_search`, once a PTQ or fallback candidate meets the bar (the first one is
    the base) compress.quantization.latency times the other activation flavour (U8S8 vs S8S8) and op-type groups kept in
    float, on this machine, and adds the combination of what paid. Every candidate is timed again in the final
    interleaved run; a latency variant may ship only if the probe found it faster beyond the noise too (one run
    alone once flipped a tie into a 14 % win). See `_ptq_then_bias_correction`. `qat(workdir)`, if given, tunes with
    fake quantization and returns a float ONNX to quantize; it runs only when post-training quantization and float
    fallback both miss the bar.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pre = workdir / "pre.onnx"
    preprocess_for_quantization(fp32_path, pre)
    judge = Judge(_predict(fp32_path, val_x), val_y)
    if judge.rows < SMALL_VAL:
        log(f"[quantize] only {judge.rows} validation rows judge the INT8 candidates: one row is "
            f"{100 / judge.rows:.1f} pt; ties within a row go to the candidate with the fewest changes")
    fp32_acc = judge.accuracy(judge.reference)
    candidates: list[Candidate] = []

    def evaluate(name: str, calibration: str, float_nodes: tuple[str, ...], source: Path | None = None, *,
                 float_op_types: tuple[str, ...] = (), activation: str | None = None, changes: int = 0,
                 bias_corrected: bool = False) -> Candidate:
        path = workdir / f"{name}.onnx"
        qcfg = dataclasses.replace(cfg, calibration=calibration, activation_type=activation or cfg.activation_type)
        graph = source or _graph_for(pre, workdir, name, calib, qcfg, float_nodes, float_op_types, bias_corrected)
        quantize_static_qdq(graph, path, calib, qcfg, exclude_nodes=float_nodes, preprocessed=source is None,
                            float_op_types=float_op_types, ranges_cache=ranges_folder(workdir))
        logits = _predict(path, val_x)
        acc, sqnr = judge.accuracy(logits), round(sqnr_db(judge.reference, logits), 2)
        drop = 100.0 * (fp32_acc - acc)
        meets = drop <= cfg.max_accuracy_drop + 1e-9 and not 0 < cfg.min_sqnr_db > sqnr  # 0: off; NaN: identical
        cand = Candidate(name, calibration, float_nodes, str(path), acc, round(drop, 4),
                         top1_agreement(judge.reference, logits), meets_bar=meets,
                         float_op_types=tuple(float_op_types), activation_type=qcfg.activation_type,
                         sqnr_db=sqnr, changes=changes, bias_corrected=bias_corrected)
        candidates.append(cand)
        return cand

    correction = _ptq_then_bias_correction(evaluate, candidates, cfg, pre, calib, judge.rows, workdir)
    sensitivity = _accuracy_candidates(evaluate, candidates, cfg, pre, calib, val_x, judge.reference, workdir, qat,
                                       correction.get("applied", False))
    probe: list[dict] = []
    sample = np.ascontiguousarray(val_x[:1])
    feeds = lambda r: {r.inputs[0].name: sample}  # noqa: E731
    superseded = {c.name for c in candidates if correction.get("applied") and c.name.startswith("ptq-")
                  and not c.bias_corrected}
    # variants re-quantize the base's graph
    base = next((c for c in candidates if c.meets_bar and c.name != "qat" and c.name not in superseded), None)
    if cfg.search and cfg.latency_search and base is not None:
        from compress.quantization.latency import latency_candidates

        probe = latency_candidates(base, evaluate, pre, feeds, threads)
    candidates, fp32_p50 = _time_structures(candidates, fp32_path, feeds, threads)
    # a latency variant ships only if both runs found it faster: the probe's, then the final one through `choose`
    rejected = {r["variant"] for r in probe if not r["kept"]} | superseded
    chosen = choose([c for c in candidates if c.name not in rejected], judge.rows)
    copy_model(Path(chosen.path), out_path)
    result = SearchResult(chosen, tuple(candidates), tuple(sensitivity), fp32_acc, fp32_p50, judge.rows, judge.by,
                          tuple(probe), correction)
    if not chosen.meets_bar:
        print(format_table(result), file=sys.stderr)
        raise SearchFailed(result,
            f"no INT8 candidate stayed within quantize.max_accuracy_drop={cfg.max_accuracy_drop} pt of FP32 "
            + (f"with logit SQNR >= quantize.min_sqnr_db={cfg.min_sqnr_db:g} dB " if cfg.min_sqnr_db else "")
            + f"({fp32_acc:.4f} on validation, {judge.by}); the most accurate ({chosen.name}, drop "
            f"{chosen.accuracy_drop_pt:.2f} pt) is saved as {out_path}"
        )
    return result


def _ptq_then_bias_correction(evaluate: Callable[..., Candidate], candidates: list[Candidate], cfg: QuantConfig,
                              pre: Path, calib: np.ndarray, rows: int, workdir: Path) -> dict:
    """The calibration methods' plain PTQ candidates, then the most accurate one again from the bias-corrected
    graph. Correction is applied (every later candidate is built from it, plain PTQ is superseded) when it loses
    no more than one validation row and either gains more than a row or raises the logit SQNR by
    BIAS_CORRECTION_GAIN_DB: on a few dozen rows accuracy moves in steps of several points, SQNR does not."""
    methods = [cfg.calibration] + ([m for m in ("minmax", "entropy", "percentile") if m != cfg.calibration]
                                   if cfg.search else [])
    for method in methods:
        evaluate(f"ptq-{method}", method, (), changes=int(method != cfg.calibration))
    if not (cfg.search and cfg.bias_correction):
        return {}
    from compress.quantization.bias_correction import correct_biases

    plain = max(candidates, key=lambda c: (c.val_accuracy, c.sqnr_db))
    stats = correct_biases(pre, Path(plain.path), corrected_path(workdir), calib)
    if not stats["layers_corrected"]:
        return {"applied": False, **stats, "reason": "no Conv or Gemm layer with INT8 weights"}
    fixed = evaluate(f"{plain.name}-bc", plain.calibration, (), changes=plain.changes + 1, bias_corrected=True)
    row = 1.0 / rows
    gain = fixed.sqnr_db - plain.sqnr_db
    applied = (fixed.val_accuracy >= plain.val_accuracy - row - 1e-12 and (fixed.meets_bar or not plain.meets_bar)
               and (fixed.val_accuracy > plain.val_accuracy + row + 1e-12 or gain >= BIAS_CORRECTION_GAIN_DB))
    log(f"[quantize] bias correction of {plain.name} ({stats['layers_corrected']} layers): logit SQNR "
        f"{plain.sqnr_db:.1f} -> {fixed.sqnr_db:.1f} dB, accuracy {plain.val_accuracy:.4f} -> "
        f"{fixed.val_accuracy:.4f}: {'applied' if applied else 'not applied'}")
    return {"applied": applied, **stats, "from": plain.name, "sqnr_db_before": plain.sqnr_db,
            "sqnr_db_after": fixed.sqnr_db}


BIAS_CORRECTION_GAIN_DB = 1.0  # 1 dB: a quarter less noise power in the logits


def ranges_folder(workdir: Path) -> Path:
    """Calibrated ranges, kept per graph and method: every candidate of one graph calibrates it once."""
    return workdir / "ranges"


def corrected_path(workdir: Path) -> Path:
    return workdir / "bias-corrected.onnx"


def _graph_for(pre: Path, workdir: Path, name: str, calib: np.ndarray, cfg: QuantConfig, float_nodes: tuple[str, ...],
               float_op_types: tuple[str, ...], bias_corrected: bool) -> Path:
    """The FP32 graph a candidate quantizes: `pre`, or bias-corrected. A candidate that keeps layers in float gets
    its own correction, measured with those layers float: a bias corrected for INT8 weights is wrong on a layer
    that stays float (measured on EfficientNet-Lite1, first depthwise float: 16.8 dB with the shared correction,
    21.8 dB with its own)."""
    if not bias_corrected:
        return pre
    if not float_nodes and not float_op_types:
        return corrected_path(workdir)
    from compress.quantization.bias_correction import correct_biases

    plain, corrected = workdir / f"{name}.uncorrected.onnx", workdir / f"{name}.corrected.onnx"
    quantize_static_qdq(pre, plain, calib, cfg, exclude_nodes=float_nodes, preprocessed=True,
                        float_op_types=float_op_types, ranges_cache=ranges_folder(workdir))
    correct_biases(pre, plain, corrected, calib)
    return corrected


def _accuracy_candidates(evaluate: Callable[..., Candidate], candidates: list[Candidate], cfg: QuantConfig,
                         pre: Path, calib: np.ndarray, val_x: np.ndarray, reference: np.ndarray, workdir: Path,
                         qat: Callable[[Path], Path] | None, corrected: bool) -> list[dict]:
    """Float fallback of the most sensitive layers, then QAT, each only while no candidate meets the bar (from the
    bias-corrected graph when correction was applied); returns the sensitivity table (empty when fallback was not
    needed)."""
    sensitivity: list[dict] = []
    if cfg.search and not any(c.meets_bar for c in candidates) and cfg.max_fallback_layers > 0:
        best = max((c for c in candidates if c.bias_corrected == corrected), key=lambda c: c.val_accuracy)
        subset = slice(0, min(len(val_x), 1000))
        # on the uncorrected graph: a one-layer INT8 model keeps every other layer float, with its FP32 bias. MinMax
        # ranges only rank the layers (calibrated once, shared by every one-layer file)
        sensitivity = layer_sensitivity(pre, calib, val_x[subset], reference[subset], _with(cfg, "minmax"), workdir)
        for k in range(1, min(cfg.max_fallback_layers, len(sensitivity)) + 1):
            cand = evaluate(f"fallback-{k}", best.calibration, tuple(r["node"] for r in sensitivity[:k]),
                            changes=k + best.changes, bias_corrected=corrected)
            if cand.meets_bar:
                break
    if cfg.search and qat is not None and cfg.qat_epochs > 0 and not any(c.meets_bar for c in candidates):
        # minmax matches the ranges QAT trained with
        evaluate("qat", "minmax", (), source=qat(workdir), changes=1 + int(cfg.calibration != "minmax"))
    return sensitivity


def _time_structures(candidates: list[Candidate], fp32_path: Path, feeds: Callable[[Any], dict],
                     threads: int) -> tuple[list[Candidate], float]:
    """p50 at batch 1 of the FP32 source and of each candidate, in one interleaved run. Calibration and QAT change
    scales and weights, not the graph: one latency per structure (float layers, float op types, flavour)."""
    def key(c: Candidate) -> tuple:
        return c.float_nodes, c.float_op_types, c.activation_type

    structures = {key(c): Path(c.path) for c in reversed(candidates)}
    names = {k: f"structure-{i}" for i, k in enumerate(structures)}
    p50 = latencies({"fp32": fp32_path, **{names[k]: p for k, p in structures.items()}}, feeds, 1, threads)
    timed = [dataclasses.replace(c, p50_ms=round(p50[names[key(c)]], 4)) for c in candidates]
    return timed, p50["fp32"]


def _with(cfg: QuantConfig, calibration: str) -> QuantConfig:
    return dataclasses.replace(cfg, calibration=calibration)
