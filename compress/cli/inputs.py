"""`compress run --model MODEL --data DATA`: what kind of model and data the user gave, as recipe settings.

MODEL: an `.onnx` file, a Hugging Face folder (config.json), or `package.module:factory`. DATA: a folder of images
(class sub-folders = labelled), an `.npz` (x, optionally y and labels), a `.csv` (text, optionally label), or the
folder of the recipe's own data set (Fashion-MNIST's IDX files)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from compress.recipe.loading import RecipeError

TEXT_RECIPE = "minilm-sentiment"


def model_kind(model: str) -> str:
    """"onnx", "hf" or "factory" for a --model value; a one-line RecipeError for anything else."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise RecipeError(f"--model {model}: no such ONNX file")
        return "onnx"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RecipeError(f"--model {model} is a folder without config.json; give a Hugging Face model folder, an "
                              ".onnx file or package.module:factory")
        return "hf"
    if ":" in model and not path.exists():
        return "factory"
    raise RecipeError(f"--model {model!r} is not an .onnx file, a Hugging Face folder (config.json) or "
                      "package.module:factory")


def data_kind(data: str, recipe_dataset: str) -> str:
    """The data source for a --data value: npz, csv, image-folder, or the recipe's own data set's folder (the path's
    kind as bench.data.files recognises it for `compress bench --data` too)."""
    from bench.data.files import path_kind

    path = Path(data)
    kind = path_kind(path)
    if kind in ("npz", "csv"):
        if not path.is_file():
            raise RecipeError(f"--data {data}: no such file")
        return kind
    if not path.is_dir():
        raise RecipeError(f"--data {data}: no such folder; give a folder of images, an .npz, a .csv, or the folder "
                          "of the recipe's data set")
    if recipe_dataset in ("fashion-mnist", "fine-foods") and kind != "images":
        return recipe_dataset  # the recipe's own data set, from another folder
    return "image-folder"


def base_recipe(recipe_ref: str | None, model: str | None, data: str | None) -> str | None:
    """Without --recipe: the text recipe for a Hugging Face folder or a CSV, else the default (image) recipe."""
    if recipe_ref is not None:
        return recipe_ref
    hf = model is not None and model_kind(model) == "hf"
    csv = data is not None and Path(data).suffix.lower() == ".csv"
    return TEXT_RECIPE if hf or csv else None


def sets_epochs(recipe_ref: str | None) -> bool:
    """Whether the user's own recipe file names train.epochs (a built-in recipe's epochs are for training from
    scratch, not for fine-tuning a model that comes trained)."""
    from compress.recipe import builtin_recipes
    from compress.recipe.loading import parse_yaml

    if recipe_ref is None or recipe_ref in builtin_recipes() or not Path(recipe_ref).is_file():
        return False
    train = parse_yaml(Path(recipe_ref).read_text(), recipe_ref).get("train")
    return isinstance(train, dict) and train.get("epochs") is not None


def apply(recipe, model: str | None, weights: str | None, data: str | None, epochs_given: bool):
    """The recipe with --model / --weights / --data applied. A model that comes trained (weights, an ONNX file) is
    the baseline as given (train.epochs 0) unless the user's own recipe file sets train.epochs (fine-tuning);
    `epochs_given`: that it does."""
    model_changes, data_changes, train_changes = {}, {}, {}
    if model is not None:
        kind = model_kind(model)
        model_changes = {"onnx": {"arch": "onnx", "path": model},
                         "hf": {"arch": "bert", "path": model, "pretrained": True},
                         "factory": {"arch": "custom", "factory": model}}[kind]
        if kind == "onnx" and not epochs_given:
            train_changes["epochs"] = 0.0
    if weights is not None:
        model_changes["weights"] = weights
        if not epochs_given:
            train_changes["epochs"] = 0.0
    if data is not None:
        dataset = data_kind(data, recipe.data.dataset)
        data_changes = {"dataset": dataset, "path": data, **({"test_path": None} if dataset == "csv" else {})}
    return recipe.replace(model=dataclasses.replace(recipe.model, **model_changes),
                          data=dataclasses.replace(recipe.data, **data_changes),
                          train=dataclasses.replace(recipe.train, **train_changes))
