"""`prune.ratio: auto`: which channel width to prune to, decided by measured latency rather than by MACs.

Every candidate width is timed on ONNX Runtime in one interleaved run beside the unpruned model (MACs and latency
part ways on small or depthwise layers: Torch-Pruning #382, TensorRT #3884), a width that is not measurably faster
than a wider one is dropped, and the rest are fine-tuned and distilled as the pipeline would (prune.auto_epochs, by
default each stage's own schedule), fastest first, until the better student of one is within the accuracy allowance:
that width is chosen, and the prune / fine-tune / distil stages run at its ratio.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from compress.quantization.candidates import NOISE

CURVE_VERSION = 2  # 2: allowance_pt per width (the whole budget where its INT8 was timed slower than FP32)

CHOSEN = "chosen"
WITHIN = "within the allowance"
OVER = "over the allowance"
NOT_TRIED = "not trained: a faster width was within the allowance"


@dataclass(frozen=True)
class WidthPoint:
    """One candidate width: its size, its latencies and, once trained, its students' validation accuracy."""

    ratio: float
    params: int
    form: str  # the form that would ship: int8, or fp32 (no static INT8, or FP32 faster and allowed to ship)
    p50_ms: float  # that form's, at the decision batch
    p50_ms_fp32: float
    p50_ms_int8: float | None
    speedup: float  # the unpruned FP32 model's p50 over p50_ms, same run
    allowance_pt: float | None = None  # the validation drop its better student may show (compress.stages.widths)
    val_accuracy: float | None = None  # the better student's: what the pipeline would go on with
    student: str | None = None  # "pruned" (fine-tuned without a teacher) or "distilled"
    students: dict | None = None  # every student's validation accuracy
    drop_pt: float | None = None
    verdict: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def slower_than_a_wider(points: list[WidthPoint], noise: float = NOISE) -> dict[float, float]:
    """Widths not worth training: ratio -> the smaller ratio (more channels, so at least as accurate) that is
    at least as fast within the noise of one run."""
    out = {}
    by_ratio = sorted(points, key=lambda p: p.ratio)
    for i, p in enumerate(by_ratio):
        wider = [w for w in by_ratio[:i] if w.p50_ms <= p.p50_ms * (1 + noise)]
        if wider:
            out[p.ratio] = wider[0].ratio
    return out


def training_order(points: list[WidthPoint], noise: float = NOISE) -> list[WidthPoint]:
    """The widths worth training, fastest first."""
    dominated = slower_than_a_wider(points, noise)
    return sorted((p for p in points if p.ratio not in dominated), key=lambda p: (p.p50_ms, p.ratio))


def judged(point: WidthPoint, students: dict[str, float], baseline_accuracy: float,
           max_drop_pt: float | None = None) -> WidthPoint:
    """The width judged by its better student, as the pipeline picks it (ties go to the distilled one), against
    `max_drop_pt` (default: the point's own allowance)."""
    allowed = point.allowance_pt if max_drop_pt is None else max_drop_pt
    best = max(students, key=lambda n: (students[n], n == "distilled"))
    drop = round(100 * (baseline_accuracy - students[best]), 4)
    return dataclasses.replace(point, val_accuracy=students[best], student=best, students=dict(students),
                               drop_pt=drop, allowance_pt=allowed, verdict=WITHIN if drop <= allowed else OVER)


def pick(points: list[WidthPoint]) -> WidthPoint:
    """The fastest width within the allowance; with none, the most accurate one trained (then the widest)."""
    within = [p for p in points if p.verdict == WITHIN]
    if within:
        return min(within, key=lambda p: (p.p50_ms, p.ratio))
    tried = [p for p in points if p.val_accuracy is not None]
    return max(tried, key=lambda p: (p.val_accuracy, -p.ratio))


def final_curve(points: list[WidthPoint], chosen: WidthPoint, dominated: dict[float, float]) -> list[WidthPoint]:
    """Every width by ratio, with its verdict: chosen, within / over the allowance, skipped and why."""
    def verdict(p: WidthPoint) -> str:
        if p.ratio == chosen.ratio:
            return CHOSEN
        if p.ratio in dominated:
            return f"not trained: no faster than ratio {dominated[p.ratio]:g}"
        return p.verdict or NOT_TRIED

    return [dataclasses.replace(p, verdict=verdict(p)) for p in sorted(points, key=lambda p: p.ratio)]
