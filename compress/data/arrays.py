"""`npz`: arrays in one `.npz` file (`data.path`): `x` (model-ready float32 rows, N x ...; no preprocessing is
applied), optionally `y` (int labels, N) and `labels` (class names). A seeded shuffle splits the rows into train
(calibration rows are its first `data.calib_size`), validation (`data.val_size`) and test (`data.val_size`, or
`data.limit_test`); with too few rows for that, 60 / 20 / 20 (bench.data.splits.pool_splits).

Without `y` the splits' `y` is None: the rows are unlabelled (accuracy then means agreement with the baseline)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.arrays import read_npz
from bench.data.splits import DatasetError
from common.errors import CompressError



@dataclass(frozen=True)
class NpzArrays:
    name: str = "npz"
    kind: str = "image"  # to the families and targets: one float array in, logits out

    def check_recipe(self, data_config) -> None:
        from compress.recipe import RecipeError

        if not data_config.path:
            raise RecipeError("data.dataset 'npz' needs data.path, a .npz file with `x` (and `y` for labels)")

    def load(self, recipe, learns: bool = True):
        import hashlib

        import numpy as np

        from bench.data.splits import ImageDataset, Split, pool_splits

        d = recipe.data
        path = Path(d.path)
        try:
            x, y, names = read_npz(path)
            rows = pool_splits(len(x), val_size=d.val_size, test_size=d.limit_test or d.val_size,
                               calib_size=d.calib_size, seed=recipe.seed, name=path.name, trains=learns)
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
