"""Tokenized text splits (`EncodedSplit`: int64 token ids and attention masks) and how they are batched: rows of
similar length together, each batch padded only to its longest row. Training, export and benchmarks all use them;
numpy only, no torch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodedSplit:
    """Token ids padded to a common length; `attention_mask` is 1 on real tokens, 0 on padding."""

    input_ids: np.ndarray  # int64, N x L
    attention_mask: np.ndarray  # int64, N x L
    y: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.y)

    @property
    def lengths(self) -> np.ndarray:
        return self.attention_mask.sum(1)

    def take(self, idx: np.ndarray, *, crop: bool = True) -> "EncodedSplit":
        """Rows `idx`; with `crop`, columns beyond the longest of those rows are dropped (dynamic padding)."""
        ids, mask = self.input_ids[idx], self.attention_mask[idx]
        if crop and len(idx):
            width = max(1, int(mask.sum(1).max()))
            ids, mask = ids[:, :width], mask[:, :width]
        return EncodedSplit(np.ascontiguousarray(ids), np.ascontiguousarray(mask), self.y[idx])


def sorted_chunks(data: EncodedSplit, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of similar length (each batch is then padded only to its longest row)."""
    order = np.argsort(data.lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def logits_by_length(data: EncodedSplit, batch_size: int, run) -> np.ndarray:
    """`run(input_ids, attention_mask) -> logits` over batches of similar length (each padded only to its longest
    row); the logits come back in the rows' order."""
    out = None
    for idx in sorted_chunks(data, batch_size):
        rows = data.take(idx)
        logits = run(rows.input_ids, rows.attention_mask)
        if out is None:
            out = np.zeros((len(data), logits.shape[1]), np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 0), np.float32)


def at_length(data: EncodedSplit, length: int, pad_id: int = 0) -> EncodedSplit:
    """Rows cut or padded (mask 0) to exactly `length` columns."""
    ids, mask = data.input_ids[:, :length], data.attention_mask[:, :length]
    if ids.shape[1] < length:
        extra = length - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id)
        mask = np.pad(mask, ((0, 0), (0, extra)), constant_values=0)
    mask = mask.copy()
    mask[:, 0] = 1  # at least one real token per row
    return EncodedSplit(np.ascontiguousarray(ids), np.ascontiguousarray(mask), data.y)
