"""Accuracy of an artifact through `runtime/`, the same path an edge app uses."""
from __future__ import annotations

import numpy as np

TEXT_INPUTS = ("input_ids", "attention_mask")


def predict(runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    outs = [next(iter(runner.infer(x[i : i + batch_size]).values())) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def is_text(split) -> bool:
    return hasattr(split, "input_ids")


def predict_split(runner, split, batch_size: int = 256) -> np.ndarray:
    """Logits for every row of an image split (`x`) or a tokenized text split (`input_ids`, `attention_mask`;
    batches of similar length, each padded only to its longest row), in the split's order."""
    if not is_text(split):
        return predict(runner, split.x, batch_size)
    from bench.text_data import logits_by_length

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return next(iter(runner.infer(dict(zip(TEXT_INPUTS, (ids, mask)))).values()))

    return logits_by_length(split, min(batch_size, 32), run)


def latency_feeds(split, batch: int, input_name: str, seq_length: int | None = None) -> dict[str, np.ndarray]:
    """A batch of real rows for timing: images repeated to `batch`; text rows cut or padded to `seq_length`."""
    if not is_text(split):
        return {input_name: np.ascontiguousarray(np.resize(split.x, (batch, *split.x.shape[1:])))}
    from bench.text_data import at_length

    rows = split.take(np.resize(np.arange(len(split)), batch), crop=False)
    rows = at_length(rows, seq_length or split.input_ids.shape[1])
    return dict(zip(TEXT_INPUTS, (rows.input_ids, rows.attention_mask)))


def accuracy(runner, split, batch_size: int = 256) -> tuple[float, np.ndarray]:
    logits = predict_split(runner, split, batch_size)
    return float((logits.argmax(1) == split.y).mean()), logits


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())
