"""A folder of images (JPEG, PNG, ...): one sub-folder per class is a labelled set (class names = folder names,
any number of classes); images directly in the folder are an unlabelled set, scored by agreement with the baseline.
Files are decoded and preprocessed with `runtime.images` (Pillow), as the recipe's `data.image` says; the same
preprocessing goes into the artifact's sidecar, so an app's images are fed exactly as these were."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.images import find_images, read_pixels
from common.errors import CompressError


def fingerprint(files: list[Path], root: Path, labels, spec, splits: dict[str, np.ndarray]) -> str:
    """The files' bytes and names (relative: the class they sit in), the preprocessing and the split."""
    digest = hashlib.sha256(repr(spec).encode())
    for f in files:
        digest.update(str(f.relative_to(root)).encode())
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    for name in ("train", "val", "test", "calib"):
        digest.update(splits[name].tobytes())
    if labels is not None:
        digest.update(labels.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ImageFolder:
    name: str = "image-folder"
    kind: str = "image"

    def check_recipe(self, data_config) -> None:
        return None  # data.path may come from --data after the recipe is read: checked when the data are loaded

    def load(self, recipe, learns: bool = True):
        from bench.data.splits import DatasetError, ImageDataset, Split, pool_splits

        d = recipe.data
        if not d.path:
            raise CompressError("data.dataset 'image-folder' needs data.path: a folder of images (class sub-folders "
                                "for labelled data), or pass --data FOLDER")
        root, spec = Path(d.path), d.image.spec()
        try:
            files, labels, classes = find_images(root)
            if labels is not None and len(classes) < 2:
                raise DatasetError(f"{root}: one class folder ({classes[0]}); a classifier needs at least two")
            rows = pool_splits(len(files), val_size=d.val_size, test_size=d.limit_test or d.val_size,
                               calib_size=d.calib_size, seed=recipe.seed, name=str(root), trains=learns)
            if d.limit_train is not None:
                rows["train"] = rows["train"][: d.limit_train]
            used = np.unique(np.concatenate(list(rows.values())))  # rows no split takes are never decoded
            x = read_pixels([files[i] for i in used], spec)
        except DatasetError as e:
            raise CompressError(str(e)) from None

        def split(idx: np.ndarray) -> Split:
            return Split(x[np.searchsorted(used, idx)], None if labels is None else labels[idx])

        return ImageDataset(
            name=root.name, train=split(rows["train"]), val=split(rows["val"]), test=split(rows["test"]),
            calib=split(rows["calib"]), labels=classes, mean=0.0, std=1.0,
            fingerprint=fingerprint(files, root, labels, spec, rows), image=spec,
            truth="labels" if labels is not None else "none")

    def preprocess(self, dataset) -> dict[str, Any]:
        return dataset.image.to_sidecar()


IMAGE_FOLDER = ImageFolder()
