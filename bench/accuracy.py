"""Accuracy of an artifact through `runtime/`, the same path an edge app uses."""
from __future__ import annotations

import numpy as np

from bench.datasets import Split


def predict(runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    outs = [next(iter(runner.infer(x[i : i + batch_size]).values())) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def accuracy(runner, split: Split, batch_size: int = 256) -> tuple[float, np.ndarray]:
    logits = predict(runner, split.x, batch_size)
    return float((logits.argmax(1) == split.y).mean()), logits


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())
