"""IDX files (MNIST's format, optionally gzipped) and Fashion-MNIST read from them (Debian's
dataset-fashion-mnist, or a folder holding its four files), as numpy arrays."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from bench.data.splits import DatasetError, ImageDataset, split_image_dataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Per-pixel statistics of the Fashion-MNIST training images scaled to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


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
