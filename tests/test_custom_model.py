"""`--model module:factory`: a user's own nn.Module goes through the same CNN pipeline."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from compress.cli.main import main
from tests.conftest import needs_fashion_mnist


def test_factory_errors_name_the_fix():
    from models import from_factory

    with pytest.raises(ValueError, match="must look like 'package.module:function'"):
        from_factory("tests.toy_models", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="cannot be imported"):
        from_factory("no_such_pkg.models:net", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="has no callable 'missing'"):
        from_factory("tests.toy_models:missing", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="returned str, not a torch.nn.Module"):
        from_factory("tests.toy_models:not_a_module", (1, 28, 28), 10)
    assert sum(p.numel() for p in from_factory("tests.toy_models:small_convnet", (1, 28, 28), 10).parameters()) > 0


def test_model_option_sets_a_custom_arch():
    result = CliRunner().invoke(main, ["run", "--model", "tests.toy_models:small_convnet", "--dump-config"])
    assert result.exit_code == 0, result.output
    assert "arch: custom" in result.output and "factory: tests.toy_models:small_convnet" in result.output


@needs_fashion_mnist
def test_a_bad_factory_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["run", "--model", "tests.toy_models:not_a_module", "--out", str(tmp_path)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines[-1] == ("error: model factory 'tests.toy_models:not_a_module' returned str, not a torch.nn.Module")


@needs_fashion_mnist
def test_a_custom_cnn_is_trained_pruned_and_quantized(tmp_path):
    import dataclasses

    from compress.pipeline import run
    from compress.recipe import BudgetConfig, ModelConfig, PruneConfig
    from tests.conftest import small_recipe

    # the toy convnet is too small for INT8 or pruning to beat it reliably on 2 cores: whether anything compressed
    # ships is the budget's business (test_budget); this test is about a user's module going through every stage
    recipe = small_recipe(model=ModelConfig(arch="custom", factory="tests.toy_models:small_convnet"),
                          prune=PruneConfig(ratio=0.5, round_to=4, finetune_epochs=0.5),
                          budget=BudgetConfig(max_accuracy_drop=5.0, allow_baseline=True))
    recipe = recipe.replace(distill=dataclasses.replace(recipe.distill, epochs=0.5))
    report = run(recipe, tmp_path / "out")
    acc = {v["name"]: v["accuracy"] for v in report["variants"]}
    assert acc["baseline"] >= 0.6, acc  # 10 classes: chance is 0.1
    prune = next(s for s in report["stages"] if s["name"] == "prune")["metrics"]
    assert prune["params_after"] < prune["params_before"]
    search = report["quantize"]["compressed"]["search"]
    assert next(c for c in search["candidates"] if c["name"] == search["chosen"])["meets_bar"], search
    student_int8 = acc[f"{report['student']['chosen']}-int8"]
    assert student_int8 >= 0.5, acc  # half a minute of fine-tuning after pruning: well above chance, not more


def _pretrained_convnet(tmp_path, suffix: str):
    """A small_convnet trained for three epochs on 3,000 training images, saved as a user would ship it."""
    import torch

    from bench.data.idx import load_fashion_mnist
    from compress.training.loop import LoopConfig, fit, seed_everything
    from tests.toy_models import small_convnet

    data = load_fashion_mnist(limit_train=3000, val_size=500, limit_test=1000)
    seed_everything(1)
    model = small_convnet((1, 28, 28), 10)
    fit(model, data.train, LoopConfig(3.0, 64, 0.05), seed=1)
    path = tmp_path / f"convnet{suffix}"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return model, path


@needs_fashion_mnist
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrained_weights_are_the_baseline_as_given(tmp_path, suffix):
    """--weights with train.epochs 0: no training; the baseline's validation accuracy is the given model's."""
    import dataclasses

    from compress.pipeline import run
    from compress.recipe import ModelConfig, TrainConfig
    from compress.training.loop import accuracy
    from tests.conftest import small_recipe

    model, weights = _pretrained_convnet(tmp_path, suffix)
    recipe = small_recipe(model=ModelConfig(arch="custom", factory="tests.toy_models:small_convnet",
                                            weights=str(weights)),
                          train=TrainConfig(epochs=0, batch_size=64))
    recipe = recipe.replace(prune=dataclasses.replace(recipe.prune, finetune_epochs=0.2),
                            distill=dataclasses.replace(recipe.distill, epochs=0.2),
                            budget=dataclasses.replace(recipe.budget, allow_baseline=True, max_accuracy_drop=50.0))
    report = run(recipe, tmp_path / "out")
    from bench.data.idx import load_fashion_mnist

    val = load_fashion_mnist(limit_train=3000, val_size=500, limit_test=1000).val
    train_stage = next(s for s in report["stages"] if s["name"] == "train")["metrics"]
    assert train_stage["loss_curve"] == []  # nothing trained
    assert train_stage["val_accuracy"] == accuracy(model.eval(), val) > 0.3  # 10 classes: chance is 0.1


def test_weights_that_do_not_fit_or_are_not_tensors_are_one_line_errors(tmp_path):
    import pickle

    import torch

    from common.errors import CompressError
    from compress.training.checkpoints import load_pretrained
    from tests.toy_models import small_convnet

    model = small_convnet((1, 28, 28), 10)
    wrong = tmp_path / "wrong.pt"
    torch.save(small_convnet((3, 28, 28), 10).state_dict(), wrong)
    with pytest.raises(CompressError, match=r"^--weights .*wrong.pt does not fit the model: size mismatch"):
        load_pretrained(model, wrong)
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CompressError, match=r"^--weights .*code.pt cannot be read \(UnpicklingError"):
        load_pretrained(model, code)
    with pytest.raises(CompressError, match=r"cannot be read"):
        load_pretrained(model, tmp_path / "missing.safetensors")


class _Payload:
    """Anything but tensors: weights_only=True must refuse to build it."""


def test_a_factory_beside_the_user_is_importable(tmp_path, monkeypatch):
    import sys

    from models import from_factory

    (tmp_path / "my_nets.py").write_text("from torch import nn\n\ndef mlp(shape, classes):\n"
                                         "    return nn.Sequential(nn.Flatten(), nn.Linear(784, classes))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert from_factory("my_nets:mlp", (1, 28, 28), 10)[1].out_features == 10


def test_weights_need_a_custom_model():
    from compress.recipe import RecipeError, recipe_from_dict

    with pytest.raises(RecipeError, match="model.weights is for a user's module"):
        recipe_from_dict({"model": {"weights": "x.safetensors"}})
    assert recipe_from_dict({"train": {"epochs": 0}}).train.epochs == 0


def test_transfer_learning_loads_the_backbone_and_gives_the_data_a_new_head(tmp_path):
    """Weights trained for 5 classes, data with 10: every layer but the last nn.Linear is loaded exactly, the head
    keeps its fresh initialisation; a misfit anywhere else is still a one-line error."""
    import torch

    from common.errors import CompressError
    from compress.training.checkpoints import load_pretrained
    from tests.toy_models import small_convnet

    torch.manual_seed(0)
    source = small_convnet((1, 28, 28), 5)
    weights = tmp_path / "five.pt"
    torch.save(source.state_dict(), weights)
    model = small_convnet((1, 28, 28), 10)
    fresh_head = model[-1].weight.detach().clone()
    with pytest.raises(CompressError, match=r"does not fit the model: size mismatch for 11.weight"):
        load_pretrained(model, weights)
    load_pretrained(model, weights, new_head=True)
    loaded, given = model.state_dict(), source.state_dict()
    assert all(torch.equal(loaded[k], given[k]) for k in given if not k.startswith("11."))
    assert torch.equal(model[-1].weight, fresh_head) and model[-1].out_features == 10
    other = tmp_path / "rgb.pt"
    torch.save(small_convnet((3, 28, 28), 5).state_dict(), other)  # the stem does not fit either
    with pytest.raises(CompressError, match=r"does not fit the model: size mismatch for 0.weight"):
        load_pretrained(small_convnet((1, 28, 28), 10), other, new_head=True)
