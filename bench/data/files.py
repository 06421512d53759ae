"""One data path, recognised by its kind and read by the reader of that kind: what `compress bench --data` and
`compress run --data` both recognise.

    npz     a `.npz` of model-ready rows: x, optionally y and labels     (bench.data.arrays.read_npz)
    csv     a `.csv` of texts with a header row: text, label columns    (bench.data.texts.read_text_csv)
    images  a folder of images; class sub-folders are labels            (bench.data.images.find_images)
    idx     any other path: a folder of IDX files, Fashion-MNIST's      (bench.data.idx.load_fashion_mnist_raw)

An `idx` path that holds no IDX files is reported by its reader, which names what is missing. The pipeline's
sources (compress/data/) know their kind from the recipe and call the same readers; they add the split policy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("npz", "csv", "images", "idx")


def path_kind(path: str | os.PathLike) -> str:
    """The kind of data at `path`, one of KINDS: by suffix for files, by content for folders."""
    from bench.data.images import holds_images

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv"):
        return suffix[1:]
    return "images" if holds_images(path) else "idx"


@dataclass(frozen=True)
class DataFile:
    """The rows one data path holds, as its reader gives them (image files are listed, not decoded)."""

    kind: str  # one of KINDS
    path: Path
    # npz: float32 N x ... (model-ready); idx: uint8 N x H x W (one split); images: N image files (decode them with
    # bench.data.images.read_pixels); csv: N texts
    rows: Any
    y: np.ndarray | None  # int64 class ids, one per row; None: unlabelled
    labels: tuple[str, ...]  # class names (index i <-> labels[i]); (): the data name none

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: np.ndarray | slice) -> "DataFile":
        """The rows `idx` (indices or a slice) and their labels."""
        if isinstance(self.rows, np.ndarray) or isinstance(idx, slice):
            rows = self.rows[idx]
        else:
            rows = type(self.rows)(self.rows[i] for i in idx)
        return DataFile(self.kind, self.path, rows, None if self.y is None else self.y[idx], self.labels)


def read_data_file(path: str | os.PathLike, *, kind: str | None = None, split: str = "test",
                   text_column: str = "text", label_column: str = "label") -> DataFile:
    """The rows at `path`, read by the reader of its kind (`kind`: as path_kind recognises it unless given).
    `split`: which of an IDX folder's splits ("train" or "test"); `text_column`, `label_column`: a CSV's columns.
    Raises bench.data.splits.DatasetError, one line that names the fix."""
    path = Path(path)
    kind = kind or path_kind(path)
    if kind == "npz":
        from bench.data.arrays import read_npz

        x, y, names = read_npz(path)
        return DataFile(kind, path, x, y, names or ())
    if kind == "images":
        from bench.data.images import find_images

        files, y, classes = find_images(path)
        return DataFile(kind, path, files, y, classes)
    if kind == "csv":
        from bench.data.texts import read_text_csv

        texts, y, names = read_text_csv(path, text_column, label_column)
        return DataFile(kind, path, texts, y, names)
    if kind == "idx":
        from bench.data.idx import FASHION_MNIST_LABELS, load_fashion_mnist_raw

        raw = load_fashion_mnist_raw(path)
        return DataFile(kind, path, raw[f"{split}_images"], raw[f"{split}_labels"], FASHION_MNIST_LABELS)
    raise ValueError(f"unknown kind of data {kind!r}; one of {', '.join(KINDS)}")
