"""`npz`: arrays in one `.npz` file (`data.path`): `x` (model-ready float32 rows, N x ...; no preprocessing is
applied), optionally `y` (int labels, N) and `labels` (class names). A seeded shuffle splits the rows into train
(calibration rows are its first `data.calib_size`), validation (`data.val_size`) and test (`data.val_size`, or
`data.limit_test`); with too few rows for that, 60 / 20 / 20 and one log line saying so.

Without `y` the splits' `y` is None: the rows are unlabelled (accuracy then means agreement with the baseline)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import CompressError



def _fail(path: Path, why: str) -> None:
    raise CompressError(f"data.path {path}: {why}")


def read_arrays(path: Path) -> tuple[Any, Any, tuple[str, ...] | None]:
    """(x as float32, y as int64 or None, label names or None) from the file, or a one-line CompressError."""
    import numpy as np

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
    import numpy as np

    if y.ndim != 1 or len(y) != rows:
        _fail(path, f"`y` must hold one label per row of `x`: {list(y.shape)} for {rows} rows")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        _fail(path, f"`y` must hold integer class ids, got {y.dtype}")
    if y.min() < 0:
        _fail(path, f"`y` holds negative class ids ({int(y.min())}); classes are 0..C-1")
    return y.astype(np.int64)


@dataclass(frozen=True)
class NpzArrays:
    name: str = "npz"
    kind: str = "image"  # to the families and targets: one float array in, logits out

    def check_recipe(self, data_config) -> None:
        from compress.recipe import RecipeError

        if not data_config.path:
            raise RecipeError("data.dataset 'npz' needs data.path, a .npz file with `x` (and `y` for labels)")

    def load(self, recipe):
        import hashlib

        import numpy as np

        from bench.datasets import DatasetError, ImageDataset, Split, pool_splits
        from compress.data.image_folder import trains

        d = recipe.data
        path = Path(d.path)
        x, y, names = read_arrays(path)
        try:
            rows = pool_splits(len(x), val_size=d.val_size, test_size=d.limit_test or d.val_size,
                               calib_size=d.calib_size, seed=recipe.seed, name=path.name, trains=trains(recipe))
        except DatasetError as e:
            raise CompressError(str(e)) from None
        train_idx = rows["train"] if d.limit_train is None else rows["train"][: d.limit_train]
        val_idx, test_idx, calib_idx = rows["val"], rows["test"], rows["calib"]

        def make(idx) -> Split:
            return Split(x[idx], None if y is None else y[idx])

        labels = names or (tuple(f"class {i}" for i in range(int(y.max()) + 1)) if y is not None else ())
        digest = hashlib.sha256()
        for arr in (x, y, np.asarray(labels, dtype=str), val_idx, test_idx, train_idx, calib_idx):
            if arr is not None:
                digest.update(np.ascontiguousarray(arr).tobytes())
        return ImageDataset(name=path.name, train=make(train_idx), val=make(val_idx), test=make(test_idx),
                            calib=make(calib_idx), labels=labels, mean=0.0, std=1.0,
                            fingerprint=digest.hexdigest()[:16], truth="labels" if y is not None else "none")

    def preprocess(self, dataset) -> dict[str, Any]:
        return {}  # the rows are model-ready: an app feeds what it saved as x


NPZ = NpzArrays()
