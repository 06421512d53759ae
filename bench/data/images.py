"""Folders of images (JPEG, PNG, ...): one sub-folder per class, or the images directly in the folder (unlabelled);
files are listed here and decoded with `runtime.images` (Pillow) as an `ImageSpec` says."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.splits import DatasetError


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
