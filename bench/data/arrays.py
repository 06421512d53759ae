"""A user's `.npz` of model-ready rows: `x`, optionally `y` (int labels) and `labels` (class names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.splits import DatasetError


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
