"""`--model module:factory`: a user's own nn.Module goes through the same CNN pipeline."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from compress.cli import main
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
