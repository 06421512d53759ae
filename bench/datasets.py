"""Datasets as numpy arrays (no torch), so bench/ and runtime/ users never need it."""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Per-pixel statistics of the Fashion-MNIST training images scaled to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


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


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated (header incomplete)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise DatasetError(f"{path} is truncated or padded: expected {count} bytes of data, found {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise DatasetError(
        f"Fashion-MNIST file {stem}[.gz] not found in {directory}; "
        "install it with 'apt-get install dataset-fashion-mnist' or pass data.path"
    )


def load_fashion_mnist_raw(directory: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Raw uint8 images (N x 28 x 28) and int64 labels of the official train/test split."""
    root = Path(directory) if directory else FASHION_MNIST_DIR
    if not root.is_dir():
        raise DatasetError(
            f"data path {root} is not a directory; install 'dataset-fashion-mnist' (apt) or set data.path"
        )
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def normalize_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 N x H x W (or N x C x H x W) -> float32 N x C x H x W, standardised."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    return (x - mean) / std


def _subset(rng: np.random.Generator, n: int, limit: int | None) -> np.ndarray:
    idx = rng.permutation(n)
    return idx if limit is None else idx[: min(limit, n)]


def load_fashion_mnist(
    directory: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    calib_size: int = 256,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Fashion-MNIST with a seeded train/validation split and calibration samples from the training split."""
    raw = load_fashion_mnist_raw(directory)
    return split_image_dataset(
        "fashion-mnist", raw, FASHION_MNIST_LABELS, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
        val_size=val_size, calib_size=calib_size, limit_train=limit_train, limit_test=limit_test, seed=seed,
    )


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


def holds_images(folder: Path) -> bool:
    """Whether `folder` is an image folder find_images reads: images in it, or in its (non-hidden) sub-folders."""
    from runtime.images import image_files

    if not folder.is_dir():
        return False
    subs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(image_files(folder)) or any(image_files(d) for d in subs)


def find_images(root: Path) -> tuple[list[Path], np.ndarray | None, tuple[str, ...]]:
    """(files, labels or None, class names): class sub-folders when the folder has any, else its own images."""
    from runtime.images import image_files

    if not root.is_dir():
        raise DatasetError(f"data path {root} is not a folder of images")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        files = image_files(root)
        if not files:
            raise DatasetError(f"{root} holds no images ({', '.join(_suffixes())}) and no class sub-folders")
        return files, None, ()
    files, labels = [], []
    for index, folder in enumerate(classes):
        found = image_files(folder)
        files += found
        labels += [index] * len(found)
    empty = [c.name for c in classes if not image_files(c)]
    if empty:
        raise DatasetError(f"{root}: class folder(s) {', '.join(empty[:5])} hold no images; remove them or add images")
    return files, np.asarray(labels, np.int64), tuple(c.name for c in classes)


def _suffixes() -> list[str]:
    from runtime.images import IMAGE_SUFFIXES

    return list(IMAGE_SUFFIXES[:4])


def read_pixels(files: list[Path], spec) -> np.ndarray:
    from runtime.errors import InputError
    from runtime.images import load_images

    try:
        return load_images(files, spec)
    except InputError as e:
        raise DatasetError(str(e)) from None


def _fail(path: Path, why: str) -> None:
    raise DatasetError(f"{path}: {why}")


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """(x as float32, y as int64 or None, label names or None) from a user's .npz (`x` model-ready rows, optional
    `y` and `labels`), or a one-line DatasetError; what a run and `compress bench --data` both read."""
    if not path.is_file():
        _fail(path, "no such file (give a .npz with an array `x`, and `y` for labels)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _fail(path, f"cannot read it as a .npz of plain arrays ({first[:200]})")
    if "x" not in arrays:
        _fail(path, f"no array named `x` (found {', '.join(sorted(arrays)) or 'none'}); save the model-ready "
                    "inputs as x, e.g. np.savez(path, x=x, y=y)")
    x = arrays["x"]
    if x.dtype.kind not in "fiu" or x.ndim < 2 or len(x) == 0:
        _fail(path, f"`x` must be a numeric array of rows (N x ...), got {x.dtype} {list(x.shape)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        _fail(path, f"`x` holds NaN or Inf in {bad} of {len(x)} rows; clean them before compressing")
    y = arrays.get("y")
    if y is not None:
        y = _labels_of(path, y, len(x))
    names = arrays.get("labels")
    if names is not None:
        if names.dtype.kind not in "US" or names.ndim != 1:
            _fail(path, f"`labels` must be a 1-D array of class names (strings), got {names.dtype} "
                        f"{list(names.shape)}")
        names = tuple(str(n) for n in names)
        if y is not None and y.max() >= len(names):
            _fail(path, f"`y` holds class {int(y.max())} but `labels` names {len(names)} classes")
    return x, y, names


def _labels_of(path: Path, y, rows: int):
    if y.ndim != 1 or len(y) != rows:
        _fail(path, f"`y` must hold one label per row of `x`: {list(y.shape)} for {rows} rows")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        _fail(path, f"`y` must hold integer class ids, got {y.dtype}")
    if y.min() < 0:
        _fail(path, f"`y` holds negative class ids ({int(y.min())}); classes are 0..C-1")
    return y.astype(np.int64)
