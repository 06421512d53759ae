"""Data sources: where a run's examples come from, behind one protocol and one registry.

A source loads its splits (train, validation, test; calibration rows from the training split), the label names,
and what identifies them for the stage cache (`fingerprint`); for images also the preprocessing an app must apply
(`preprocess`, recorded in the artifact's sidecar). Built in: `fashion-mnist` and `image-folder` (images),
`npz` (model-ready arrays), `fine-foods` and `csv` (texts). Register another with `register(source)`.
"""
from __future__ import annotations

from typing import Any, Protocol


class DataSource(Protocol):
    name: str  # the recipe's data.dataset value
    kind: str  # "image" or "text": the model families that take it

    def check_recipe(self, data_config) -> None: ...  # one-line RecipeError for the data section's settings
    # the data set, or a one-line CompressError; `learns`: whether the run trains on it (if not, a source may
    # keep only calibration rows for training and hold out the rest)
    def load(self, recipe, learns: bool = True) -> Any: ...
    def preprocess(self, dataset) -> dict[str, Any]: ...  # the sidecar's "preprocess" (images)


_SOURCES: dict[str, DataSource] = {}


def register(source: DataSource) -> None:
    _SOURCES[source.name] = source


def unregister(source: DataSource) -> None:
    if _SOURCES.get(source.name) is source:
        del _SOURCES[source.name]


def names() -> list[str]:
    _builtins()
    return sorted(_SOURCES)


def get(name: str) -> DataSource:
    _builtins()
    return _SOURCES[name]


def _builtins() -> None:
    if "fashion-mnist" not in _SOURCES:
        from compress.data.fashion_mnist import FASHION_MNIST
        from compress.data.arrays import NPZ
        from compress.data.image_folder import IMAGE_FOLDER
        from compress.data.texts import CSV_TEXTS, FINE_FOODS

        for source in (FASHION_MNIST, FINE_FOODS, CSV_TEXTS, IMAGE_FOLDER, NPZ):
            register(source)
