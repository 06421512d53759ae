"""The split types every data set comes as, and the seeded ways rows are split (numpy only, no torch).

Images and arrays: `Split` rows in an `ImageDataset` (train, val, test, calib). Texts: `TextSplit` rows in a
`TextDataset` (train, val, test), tokenized by the model into `bench.data.tokens.EncodedSplit`. The readers of files
(bench.data.idx, .images, .arrays, .texts) raise `DatasetError`; the pipeline's sources and `compress bench` turn it
into their own one-line error."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A data set is missing, malformed or unusable; the message names the fix."""


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, N x C x H x W, normalised
    y: np.ndarray | None  # int64, N; None for unlabelled data until the baseline's top-1 stands in (agreement)

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class ImageDataset:
    name: str
    train: Split
    val: Split
    test: Split
    calib: Split
    labels: tuple[str, ...]
    mean: float
    std: float
    fingerprint: str  # identifies the data for the stage cache
    image: Any = None  # runtime.images.ImageSpec of data read from image files (None: arrays given as they are)
    # "labels": accuracy against the data's labels; "baseline": unlabelled data, scored by top-1 agreement with the
    # baseline (its predictions stand in for labels once it exists); "none": not labelled yet
    truth: str = "labels"

    @property
    def labelled(self) -> bool:
        return self.truth == "labels"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.test.x.shape[1:])

    def with_baseline_labels(self, labels: dict[str, np.ndarray], classes: int) -> "ImageDataset":
        """Unlabelled data labelled by the baseline's top-1 (`labels`: split name -> one label per row)."""
        import dataclasses

        splits = {name: Split(getattr(self, name).x, labels[name]) for name in ("train", "val", "test", "calib")}
        names = self.labels if len(self.labels) == classes else tuple(f"class {i}" for i in range(classes))
        return dataclasses.replace(self, **splits, labels=names, truth="baseline")

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TextSplit:
    texts: tuple[str, ...]
    y: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TextDataset:
    name: str
    train: TextSplit
    val: TextSplit
    test: TextSplit
    labels: tuple[str, ...]
    fingerprint: str  # identifies the data for the stage cache

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def normalize_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 N x H x W (or N x C x H x W) -> float32 N x C x H x W, standardised."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    return (x - mean) / std


def _subset(rng: np.random.Generator, n: int, limit: int | None) -> np.ndarray:
    idx = rng.permutation(n)
    return idx if limit is None else idx[: min(limit, n)]


def split_image_dataset(
    name: str,
    raw: dict[str, np.ndarray],
    labels: tuple[str, ...],
    mean: float,
    std: float,
    *,
    val_size: int,
    calib_size: int,
    limit_train: int | None,
    limit_test: int | None,
    seed: int,
) -> ImageDataset:
    """Raw train and test images (uint8, `raw` as bench.data.idx.load_fashion_mnist_raw returns them) as a data
    set: a seeded validation slice of `val_size` training rows, calibration rows from the rest of training, test
    rows a seeded sample (`limit_test`), every split standardised with `mean` and `std`."""
    rng = np.random.default_rng(seed)
    train_images, train_labels = raw["train_images"], raw["train_labels"]
    n_classes = len(labels)
    for split in ("train", "test"):
        y = raw[f"{split}_labels"]
        if len(y) == 0:
            raise DatasetError(f"{name}: the {split} split is empty")
        if y.min() < 0 or y.max() >= n_classes:
            raise DatasetError(f"{name}: {split} labels must lie in [0, {n_classes - 1}], found {y.min()}..{y.max()}")
    order = _subset(rng, len(train_labels), None if limit_train is None else limit_train + val_size)
    if len(order) <= val_size:
        raise DatasetError(f"{name}: {len(order)} training samples leave nothing after a validation split of {val_size}")
    val_idx, train_idx = order[:val_size], order[val_size:]
    if len(np.unique(train_labels[train_idx])) < 2:
        raise DatasetError(f"{name}: the training split holds a single class; a classifier needs at least two")
    calib_idx = train_idx[: min(calib_size, len(train_idx))]
    test_idx = np.sort(_subset(rng, len(raw["test_labels"]), limit_test))

    def make(images: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
        return Split(normalize_images(images[idx], mean, std), y[idx].astype(np.int64))

    import hashlib

    digest = hashlib.sha256()
    for arr in (train_images, train_labels, raw["test_images"], raw["test_labels"], order, test_idx):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return ImageDataset(
        name=name,
        train=make(train_images, train_labels, train_idx),
        val=make(train_images, train_labels, val_idx),
        test=make(raw["test_images"], raw["test_labels"], test_idx),
        calib=make(train_images, train_labels, calib_idx),
        labels=labels,
        mean=mean,
        std=std,
        fingerprint=digest.hexdigest()[:16],
    )


def pool_splits(n: int, *, val_size: int, test_size: int, calib_size: int, seed: int, name: str,
                trains: bool = True) -> dict[str, np.ndarray]:
    """Row indices of a user's data set that comes as one pool (an image folder, an .npz): a seeded shuffle into
    validation, test and training rows, calibration rows taken from training. `val_size` and `test_size` rows when
    the pool leaves room for `calib_size` more, else 60 / 20 / 20. `trains` false (a model taken as given, nothing
    fine-tuned or distilled): the training rows are the calibration rows only (at most half the pool) and every
    other row is held out. Validation and test together are the rows a run's budget is judged on; no calibration
    row is ever among them."""
    if n < 10:
        raise DatasetError(f"{name}: {n} samples are too few to calibrate on and judge against; give at least 10")
    order = np.random.default_rng(seed).permutation(n)
    if not trains:
        train = order[: min(calib_size, n // 2)]
        rest = order[len(train):]
        n_val = min(val_size, len(rest) - len(rest) // 2)
        val, test = rest[:n_val], rest[n_val:][:test_size]
    elif n >= val_size + test_size + calib_size:
        val, test, train = order[:val_size], order[val_size:val_size + test_size], order[val_size + test_size:]
    else:
        n_val, n_test = max(1, round(n * 0.2)), max(1, round(n * 0.2))
        val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    return {"train": train, "val": np.sort(val), "test": np.sort(test), "calib": train[: min(calib_size, len(train))]}


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices, holding out `fraction` of every class; seeded."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"validation fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        held.append(idx[: max(1, int(round(fraction * len(idx))))])
    held_idx = np.sort(np.concatenate(held))
    kept_idx = np.setdiff1d(np.arange(len(y)), held_idx)
    if len(kept_idx) == 0:
        raise DatasetError(f"a validation fraction of {fraction} leaves no training rows")
    return kept_idx, held_idx
