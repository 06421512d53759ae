"""Labelled texts: the fine-food reviews shipped with the toolkit, or a user's CSV (one file, whose test rows are a
seeded stratified 20 %, or train and test files).

They arrive as text; the model family tokenizes them with its own tokenizer (compress.families.encoder.family)."""
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

    def load(self, recipe, learns: bool = True):
        from bench.data.splits import DatasetError
        from bench.data.texts import load_fine_foods

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
        return None  # data.path may come from --data after the recipe is read: checked when the data are loaded

    def load(self, recipe, learns: bool = True):
        from bench.data.splits import DatasetError
        from bench.data.texts import load_text_dataset

        d = recipe.data
        if not d.path:
            raise CompressError("data.dataset 'csv' needs data.path: a CSV with text and label columns (or pass --data "
                                "FILE.csv); data.test_path, a test CSV, is optional")
        test = Path(d.test_path) if d.test_path else None
        try:
            return load_text_dataset("csv", Path(d.path), test, d.text_column, d.label_column,
                                     val_size=d.val_size, seed=recipe.seed, limit_train=d.limit_train,
                                     limit_test=d.limit_test)
        except DatasetError as e:
            raise CompressError(str(e)) from None

    def preprocess(self, dataset) -> dict[str, Any]:
        return {}


FINE_FOODS = FineFoods()
CSV_TEXTS = CsvTexts()
