"""Fashion-MNIST (Debian's dataset-fashion-mnist): 28x28 grayscale clothing, 10 classes, as numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import CompressError


@dataclass(frozen=True)
class FashionMNIST:
    name: str = "fashion-mnist"
    kind: str = "image"

    def check_recipe(self, data_config) -> None:
        return None

    def load(self, recipe, learns: bool = True):
        from bench.data.idx import load_fashion_mnist
        from bench.data.splits import DatasetError

        d = recipe.data
        try:
            return load_fashion_mnist(d.path, val_size=d.val_size, calib_size=d.calib_size,
                                      limit_train=d.limit_train, limit_test=d.limit_test, seed=recipe.seed)
        except DatasetError as e:
            raise CompressError(str(e)) from None

    def preprocess(self, dataset) -> dict[str, Any]:
        return {"scale": 1 / 255.0, "mean": dataset.mean, "std": dataset.std, "layout": "NCHW"}


FASHION_MNIST = FashionMNIST()
