"""The one comparator: how far a test output sits from its reference, and whether that is within stated bars.

Every parity and INT8 check uses it (torch vs ONNX export, text export, the .tflite against torch, the TensorRT /
CUDA artifact against ONNX Runtime CPU, the INT8 search's agreement and per-layer SQNR, the bench's agreement
with the baseline). numpy only.

Metrics (reference first, then the output under test; both cast to float64 before differencing):

- ``max_abs_diff``   max |test - ref| over every element;
- ``max_rel_diff``   max |test - ref| / max(|ref|, REL_EPS) over every element, REL_EPS = 1e-6 (a logit at
  zero would otherwise divide by zero; beneath 1e-6 the relative error is measured against 1e-6);
- ``top1_agreement`` share of rows whose arg-max class matches (2-D logits) or whose labels match (1-D);
- ``sqnr_db``        20 log10(||ref|| / ||ref - test||) over all elements (torchao's measure); +inf when the
  outputs are identical, -inf when the reference is all zeros and the test is not.

A NaN anywhere makes the metric NaN, and a NaN never meets a bar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

REL_EPS = 1e-6


def _pair(reference, test) -> tuple[np.ndarray, np.ndarray]:
    ref, got = np.asarray(reference), np.asarray(test)
    if ref.shape != got.shape:
        raise ValueError(f"cannot compare shapes {list(got.shape)} (test) and {list(ref.shape)} (reference)")
    if ref.size == 0:
        raise ValueError("nothing to compare: the arrays are empty")
    return ref, got


def _diff(reference, test) -> tuple[np.ndarray, np.ndarray]:
    ref, got = _pair(reference, test)
    ref = ref.astype(np.float64)
    return ref, got.astype(np.float64) - ref


def max_abs_diff(a, b) -> float:
    """max |b - a| over every element (symmetric)."""
    _, err = _diff(a, b)
    return float(np.abs(err).max())


def max_rel_diff(a, b, *, eps: float = REL_EPS) -> float:
    """max |b - a| / max(|a|, eps) over every element; `a` is the reference."""
    ref, err = _diff(a, b)
    return float((np.abs(err) / np.maximum(np.abs(ref), eps)).max())


def _labels(x: np.ndarray) -> np.ndarray:
    if x.ndim == 1:
        return x
    if x.ndim == 2:
        return x.argmax(1)
    raise ValueError(f"top-1 agreement takes labels (N) or logits (N x classes), got shape {list(x.shape)}")


def top1_agreement(a, b) -> float:
    """Share of rows on which `a` and `b` pick the same class; each is logits (N x classes: arg-max) or labels (N)."""
    a, b = np.asarray(a), np.asarray(b)
    la, lb = _labels(a), _labels(b)
    if la.shape != lb.shape:
        raise ValueError(f"cannot compare {len(lb)} rows with {len(la)}")
    if la.size == 0:
        raise ValueError("nothing to compare: no rows")
    return float((la == lb).mean())


def sqnr_db(reference, test) -> float:
    """20 log10(||reference|| / ||reference - test||) in dB; +inf when identical, -inf for a zero reference."""
    ref, err = _diff(reference, test)
    noise, signal = float(np.linalg.norm(err)), float(np.linalg.norm(ref))
    if math.isnan(noise) or math.isnan(signal):
        return math.nan
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 20.0 * math.log10(signal / noise)


@dataclass(frozen=True)
class Bars:
    """What a comparison must meet; None = not checked. `atol` bounds max_abs_diff, `rtol` bounds max_rel_diff
    (elementwise, against max(|ref|, REL_EPS)), `min_agreement` bounds top1_agreement from below and
    `min_sqnr_db` bounds sqnr_db from below."""
    atol: float | None = None
    rtol: float | None = None
    min_agreement: float | None = None
    min_sqnr_db: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("atol", self.atol), ("rtol", self.rtol), ("min_agreement", self.min_agreement),
                                  ("min_sqnr_db", self.min_sqnr_db)) if v is not None}


def _misses(m: Mapping[str, float], bars: Bars) -> list[str]:
    out = []
    # a NaN fails every bar: `not (value <= bar)` rather than `value > bar`
    if bars.atol is not None and not m["max_abs_diff"] <= bars.atol:
        out.append(f"max_abs_diff {m['max_abs_diff']:.3g} > atol {bars.atol:.3g} "
                   f"(over by {m['max_abs_diff'] - bars.atol:.3g})")
    if bars.rtol is not None and not m["max_rel_diff"] <= bars.rtol:
        out.append(f"max_rel_diff {m['max_rel_diff']:.3g} > rtol {bars.rtol:.3g} "
                   f"(over by {m['max_rel_diff'] - bars.rtol:.3g})")
    if bars.min_agreement is not None and not m["top1_agreement"] >= bars.min_agreement:
        out.append(f"top1_agreement {m['top1_agreement']:.4f} < min_agreement {bars.min_agreement:g} "
                   f"(short by {bars.min_agreement - m['top1_agreement']:.4f})")
    if bars.min_sqnr_db is not None and not m["sqnr_db"] >= bars.min_sqnr_db:
        out.append(f"sqnr_db {m['sqnr_db']:.2f} < min_sqnr_db {bars.min_sqnr_db:g} "
                   f"(short by {bars.min_sqnr_db - m['sqnr_db']:.2f} dB)")
    return out


def _json_float(v: float) -> float | None:
    """JSON has no infinity or NaN: a non-finite metric is written as null (sqnr_db null = identical outputs)."""
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class Comparison:
    """A test output against its reference: the metrics, the bars they were held to, `ok`, and `why` (one line
    naming each metric that missed its bar and by how much; empty when ok). `context`: how the rows were produced
    (batch sizes, sequence lengths...), written beside the metrics by `to_dict`."""
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    sqnr_db: float
    samples: int
    bars: Bars = Bars()
    ok: bool = True
    why: str = ""
    context: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The keys reports already read (max_abs_diff, top1_agreement, samples, sqnr_db; the context keys such
        as batch_sizes) plus max_rel_diff, ok, the bars and, on a miss, why."""
        out: dict[str, Any] = {"max_abs_diff": _json_float(self.max_abs_diff),
                               "top1_agreement": _json_float(self.top1_agreement)}
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.context})
        out.update({"samples": self.samples, "max_rel_diff": _json_float(self.max_rel_diff),
                    "sqnr_db": _json_float(self.sqnr_db), "ok": self.ok, "bars": self.bars.to_dict()})
        if self.why:
            out["why"] = self.why
        return out


def compare(reference, test, bars: Bars = Bars(), **context: Any) -> Comparison:
    """Every metric of `test` against `reference` (same shape: N x classes logits, or N labels), held to `bars`.
    Keyword arguments are kept as the comparison's context (e.g. batch_sizes=(1, 4, 64))."""
    ref, got = _pair(reference, test)
    metrics = {"max_abs_diff": max_abs_diff(ref, got), "max_rel_diff": max_rel_diff(ref, got),
               "top1_agreement": top1_agreement(ref, got), "sqnr_db": sqnr_db(ref, got)}
    misses = _misses(metrics, bars)
    return Comparison(**metrics, samples=int(len(ref)), bars=bars, ok=not misses, why="; ".join(misses),
                      context=tuple(context.items()))
