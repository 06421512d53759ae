"""Accuracy of an artifact through `runtime/`, the same path an edge app uses."""
from __future__ import annotations

import numpy as np

from runtime.measure import predict, predict_arrays

TEXT_INPUTS = ("input_ids", "attention_mask")


def fixed_length(runner) -> int | None:
    """The sequence length a text artifact is fixed to (a .tflite), or None when it is dynamic."""
    shape = runner.inputs[0].shape
    return shape[1] if len(shape) > 1 else None


def is_text(split) -> bool:
    return hasattr(split, "input_ids")


def predict_split(runner, split, batch_size: int = 256) -> np.ndarray:
    """Logits for every row of an image split (`x`) or a tokenized text split (`input_ids`, `attention_mask`;
    batches of similar length, each padded only to its longest row), in the split's order."""
    if not is_text(split):
        return predict(runner, split.x, batch_size)
    from bench.data.tokens import at_length, logits_by_length

    length = fixed_length(runner)
    if length is not None:  # a fixed-shape artifact: every row cut or padded to its length
        rows = at_length(split, length)
        return predict_arrays(runner, (rows.input_ids, rows.attention_mask), batch_size)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return next(iter(runner.infer(dict(zip(TEXT_INPUTS, (ids, mask)))).values()))

    return logits_by_length(split, min(batch_size, 32), run)


def latency_feeds(split, batch: int, input_name: str, seq_length: int | None = None) -> dict[str, np.ndarray]:
    """A batch of real rows for timing: images repeated to `batch`; text rows cut or padded to `seq_length`."""
    if not is_text(split):
        return {input_name: np.ascontiguousarray(np.resize(split.x, (batch, *split.x.shape[1:])))}
    from bench.data.tokens import at_length

    rows = split.take(np.resize(np.arange(len(split)), batch), crop=False)
    rows = at_length(rows, seq_length or split.input_ids.shape[1])
    return dict(zip(TEXT_INPUTS, (rows.input_ids, rows.attention_mask)))


def accuracy(runner, split, batch_size: int = 256) -> tuple[float, np.ndarray]:
    logits = predict_split(runner, split, batch_size)
    return float((logits.argmax(1) == split.y).mean()), logits


def discordant_counts(labels: np.ndarray, reference_logits: np.ndarray, logits: np.ndarray) -> dict[str, int]:
    """On the same rows: how many only the reference gets right, how many only this model, and how many rows."""
    ref_right = reference_logits.argmax(1) == labels
    right = logits.argmax(1) == labels
    return {"baseline_only": int((ref_right & ~right).sum()), "variant_only": int((right & ~ref_right).sum()),
            "rows": int(len(labels))}


def paired_drop_interval(baseline_only: int, variant_only: int, rows: int, *, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of the accuracy drop (points) of a model against a baseline scored on the same rows.

    Only the discordant rows carry information: drop d = (b - c) / n, with the paired (Wald) standard error
    sqrt(b + c - (b - c)^2 / n) / n. Two independent accuracies would overstate the spread several times."""
    if rows < 1:
        raise ValueError("no rows scored")
    b, c, n = baseline_only, variant_only, rows
    d = (b - c) / n
    se = np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return round(float(100.0 * (d - z * se)), 2), round(float(100.0 * (d + z * se)), 2)
