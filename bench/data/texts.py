"""Text-classification data as numpy arrays (no torch): a generic CSV reader (one file, or train and test
files) and the fine-food reviews.

Texts stay strings here; tokenization belongs to the model (`models.hf.TextTokenizer`), which turns a
`TextSplit` into an `EncodedSplit` of int64 arrays that training, export and benchmarks all consume.
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.splits import DatasetError, TextDataset, TextSplit, stratified_split

# The copy shipped with the project (MIT; provenance in its README.md), then the shared one on these machines.
FINE_FOODS_DIRS = (Path(__file__).resolve().parent / "fine_foods", Path("/work/shared/data/fine_foods"))
FINE_FOODS_LABELS = ("other", "great")  # index 1 = a 5-star review


def read_text_csv(path: str | os.PathLike, text_column: str, label_column: str,
                  labels: Sequence[str] | None = None) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """(texts, int64 labels, label names) from a CSV with a header row.

    `labels` fixes the label order (index i <-> labels[i]); without it the sorted distinct values are used.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if not header:
                raise DatasetError(f"{path} is empty; expected a header row with {text_column!r} and {label_column!r}")
            for column in (text_column, label_column):
                if column not in header:
                    raise DatasetError(f"{path} has no column {column!r}; columns: {', '.join(header)}")
            rows = [(row[text_column], row[label_column]) for row in reader]
    except FileNotFoundError:
        raise DatasetError(f"text data file {path} not found; pass data.path to a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {path} as UTF-8 CSV: {e}") from None
    if not rows:
        raise DatasetError(f"{path} has a header but no rows")
    bad = [i + 2 for i, (t, l) in enumerate(rows) if t is None or l is None]
    if bad:
        raise DatasetError(f"{path}: line {bad[0]} has fewer fields than the header")
    values = [label.strip() for _, label in rows]
    names = tuple(labels) if labels is not None else tuple(sorted(set(values)))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DatasetError(f"{path}: label(s) {', '.join(map(repr, unknown[:5]))} not among {list(names)}")
    y = np.array([index[v] for v in values], dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise DatasetError(f"{path}: every row has label {values[0]!r}; a classifier needs at least two classes")
    return tuple(t for t, _ in rows), y, names


def find_fine_foods(directory: str | os.PathLike | None = None) -> Path:
    candidates = (Path(directory),) if directory else FINE_FOODS_DIRS
    for d in candidates:
        if (d / "train.csv").is_file() and (d / "test.csv").is_file():
            return d
    raise DatasetError(
        f"fine-food reviews (train.csv, test.csv) not found in {', '.join(map(str, candidates))}; "
        "the project ships a copy in bench/data/fine_foods/ — pass data.path to its folder"
    )


TEST_FRACTION = 0.2  # a single CSV: the share of every class held out as the test split
MIN_ROWS_PER_CLASS = 3  # a single CSV: one row each for test, validation and training


def load_text_dataset(name: str, train_csv: Path, test_csv: Path | None, text_column: str, label_column: str, *,
                      labels: Sequence[str] | None = None, val_fraction: float = 0.1, val_size: int | None = None,
                      seed: int = 0, limit_train: int | None = None, limit_test: int | None = None,
                      test_fraction: float = TEST_FRACTION) -> TextDataset:
    """Train/val/test from two CSV files, or from one (`test_csv` None: the test rows are a seeded stratified
    `test_fraction` of it). Val is a seeded stratified slice of the training rows (`val_size` rows when given,
    else `val_fraction` of them)."""
    train_texts, train_y, names = read_text_csv(train_csv, text_column, label_column, labels)
    if test_csv is None:
        counts = np.bincount(train_y, minlength=len(names))
        few = [(names[c], int(n)) for c, n in enumerate(counts) if 0 < n < MIN_ROWS_PER_CLASS]
        if few:
            raise DatasetError(f"{train_csv}: label {few[0][0]!r} has {few[0][1]} row(s); one CSV is split into "
                               f"train, validation and test, so every label needs {MIN_ROWS_PER_CLASS} "
                               "(or give a test CSV)")
        rest, held_test = stratified_split(train_y, test_fraction, seed + 2)
        test_texts, test_y = tuple(train_texts[i] for i in held_test), train_y[held_test]
        train_texts, train_y = tuple(train_texts[i] for i in rest), train_y[rest]
        if val_size is not None:  # one small file: a recipe's validation size is capped at a quarter of the rest
            val_size = min(val_size, max(1, len(train_y) // 4))
    else:
        test_texts, test_y, _ = read_text_csv(test_csv, text_column, label_column, names)
    if val_size is not None:
        if val_size >= len(train_y):
            raise DatasetError(f"{name}: val_size {val_size} leaves no training rows of {len(train_y)}")
        val_fraction = val_size / len(train_y)
    kept, held = stratified_split(train_y, val_fraction, seed)
    rng = np.random.default_rng(seed + 1)
    if limit_train is not None:
        kept = np.sort(rng.permutation(kept)[:limit_train])
    test_idx = np.arange(len(test_y)) if limit_test is None else np.sort(rng.permutation(len(test_y))[:limit_test])

    def make(texts: tuple[str, ...], y: np.ndarray, idx: np.ndarray) -> TextSplit:
        return TextSplit(tuple(texts[i] for i in idx), y[idx])

    train, val = make(train_texts, train_y, kept), make(train_texts, train_y, held)
    if len(np.unique(train.y)) < 2:
        raise DatasetError(f"{name}: the training split holds a single class; a classifier needs at least two")
    digest = hashlib.sha256()
    for part in (train, val, make(test_texts, test_y, test_idx)):
        digest.update("\x00".join(part.texts).encode())
        digest.update(part.y.tobytes())
    return TextDataset(name, train, val, make(test_texts, test_y, test_idx), names, digest.hexdigest()[:16])


def load_fine_foods(directory: str | os.PathLike | None = None, *, val_fraction: float = 0.1,
                    val_size: int | None = None, seed: int = 0, limit_train: int | None = None,
                    limit_test: int | None = None) -> TextDataset:
    """The fine-food reviews (binary: 'great' = 5 stars vs 'other'); 3,600 train / 400 val / 1,000 test.

    The 4,000 training reviews come from 10 products only, so a split grouped by product would leave too few
    groups; the validation slice is a seeded stratified one instead (slightly optimistic, as the README notes).
    """
    root = find_fine_foods(directory)
    return load_text_dataset("fine-foods", root / "train.csv", root / "test.csv", "review", "label",
                             labels=FINE_FOODS_LABELS, val_fraction=val_fraction, val_size=val_size, seed=seed,
                             limit_train=limit_train, limit_test=limit_test)
