"""Synthetic image folders as a user would bring them: PNG files, one sub-folder per class (or none: unlabelled).

Class k is drawn as colour k % 5 in pattern k // 5 (stripes across, stripes down, checks, plain) on noise, so a
small convnet learns them in a few epochs; 20 classes by default."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 210, 30], [200, 40, 210]], np.float32)


def draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One H x W x 3 uint8 picture of class `label`."""
    yy, xx = np.mgrid[:size, :size]
    period = 6 + rng.integers(0, 3)
    masks = [(yy // period) % 2 == 0, (xx // period) % 2 == 0, ((yy // period) + (xx // period)) % 2 == 0,
             np.ones((size, size), bool)]
    mask = masks[(label // 5) % 4]
    image = rng.normal(110, 25, (size, size, 3))
    image[mask] = COLOURS[label % 5] + rng.normal(0, 15, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder(root: Path, *, classes: int = 20, per_class: int = 12, size: int = 72, seed: int = 0,
                 labelled: bool = True) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(classes):
        folder = root / f"class_{k:02d}" if labelled else root
        folder.mkdir(exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw(k, size, rng)).save(folder / f"{k:02d}_{i:03d}.png")
    return root
