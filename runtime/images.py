"""Raw images -> a model's input, as the artifact's sidecar declares it (resize, centre crop, colour order,
per-channel mean/std, layout). The toolkit reads an image folder through the same functions, so the pixels a model
was judged on are the pixels an app feeds it. Decoding needs Pillow (`pip install edge-compress[images]`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from runtime.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # the usual ImageNet evaluation: resize to size / 0.875, centre-crop size


@dataclass(frozen=True)
class ImageSpec:
    size: tuple[int, int]  # (height, width) the model takes, after the centre crop
    resize: int  # the shorter side is resized to this before the crop
    mean: tuple[float, ...]  # per channel, on pixels scaled to [0, 1]
    std: tuple[float, ...]
    color: str = "rgb"  # rgb, bgr or grayscale
    layout: str = "NCHW"

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def to_sidecar(self) -> dict[str, Any]:
        return {"kind": "image", "size": list(self.size), "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std), "color": self.color, "layout": self.layout, "scale": 1 / 255.0,
                "interpolation": "bilinear"}

    @classmethod
    def from_sidecar(cls, pre: dict[str, Any]) -> "ImageSpec | None":
        """The spec a sidecar declares, or None for the older scalar form (scale, mean, std of a grayscale set)."""
        if pre.get("kind") != "image":
            return None
        return cls(tuple(pre["size"]), int(pre["resize"]), tuple(pre["mean"]), tuple(pre["std"]),
                   pre.get("color", "rgb"), pre.get("layout", "NCHW"))


def pillow():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading image files needs Pillow: pip install 'edge-compress[images]' (or pillow)") from None
    return Image


def decode(path: str | Path):
    """An image file as a Pillow image; InputError (one line) for a file Pillow cannot read."""
    image_module = pillow()
    try:
        with image_module.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, image_module.DecompressionBombError) as e:
        raise InputError(f"cannot read image {path}: {e}") from None


def to_array(image, spec: ImageSpec) -> np.ndarray:
    """One image (a Pillow image, or uint8 H x W [x C] pixels) -> float32 in the model's layout."""
    image_module = pillow()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise InputError(f"raw image arrays must be uint8 H x W or H x W x C, got {image.dtype} {list(image.shape)}")
        image = image_module.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    image = image.convert("L" if spec.color == "grayscale" else "RGB")
    w, h = image.size
    short = min(w, h)
    new_w, new_h = max(1, round(w * spec.resize / short)), max(1, round(h * spec.resize / short))
    image = image.resize((new_w, new_h), image_module.BILINEAR)
    out_h, out_w = spec.size
    if new_h < out_h or new_w < out_w:
        raise InputError(f"preprocess resize {spec.resize} is smaller than the crop {out_h}x{out_w}")
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    image = image.crop((left, top, left + out_w, top + out_h))
    x = np.asarray(image, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    if spec.color == "bgr":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x, dtype=np.float32)


def load_images(images: Iterable, spec: ImageSpec) -> np.ndarray:
    """Paths, Pillow images or uint8 arrays -> one float32 batch N x ... in the model's layout."""
    rows = [to_array(decode(i) if isinstance(i, (str, Path)) else i, spec) for i in images]
    if not rows:
        raise InputError("no images given")
    return np.stack(rows)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def is_raw_batch(raw: Any) -> bool:
    """Whether `raw` holds image files or decoded pictures rather than a model-ready array."""
    if isinstance(raw, (str, Path)):
        return True
    return isinstance(raw, Sequence) and not isinstance(raw, np.ndarray) and len(raw) > 0


def as_list(raw: Any) -> list:
    return [raw] if isinstance(raw, (str, Path)) else list(raw)
