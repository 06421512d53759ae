"""Labelled texts: the fine-food reviews shipped with the toolkit, or a user's CSV (train and test files).

They arrive as text; the model family tokenizes them with its own tokenizer (compress.families.encoder)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import CompressError


@dataclass(frozen=True)
class FineFoods:
    name: str = "fine-foods"
    kind: str = "text"

    def check_recipe(self, data_config) -> None:
        return None

    def load(self, recipe):
        from bench.datasets import DatasetError
        from bench.text_data import load_fine_foods

        d = recipe.data
        try:
            return load_fine_foods(d.path, val_size=d.val_size, seed=recipe.seed, limit_train=d.limit_train,
                                   limit_test=d.limit_test)
        except DatasetError as e:
            raise CompressError(str(e)) from None

    def preprocess(self, dataset) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class CsvTexts:
    name: str = "csv"
    kind: str = "text"

    def check_recipe(self, data_config) -> None:
        from compress.recipe import RecipeError

        if not (data_config.path and data_config.test_path):
            raise RecipeError("data.dataset 'csv' needs data.path (training CSV) and data.test_path (test CSV)")

    def load(self, recipe):
        from bench.datasets import DatasetError
        from bench.text_data import load_text_dataset

        d = recipe.data
        try:
            return load_text_dataset("csv", Path(d.path), Path(d.test_path), d.text_column, d.label_column,
                                     val_size=d.val_size, seed=recipe.seed, limit_train=d.limit_train,
                                     limit_test=d.limit_test)
        except DatasetError as e:
            raise CompressError(str(e)) from None

    def preprocess(self, dataset) -> dict[str, Any]:
        return {}


FINE_FOODS = FineFoods()
CSV_TEXTS = CsvTexts()
