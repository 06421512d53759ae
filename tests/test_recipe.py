"""Recipe loading: built-ins, round trip, and errors that name the fix."""
from __future__ import annotations

import pytest

from compress.recipe import RecipeError, builtin_recipes, dump_recipe, load_recipe, recipe_from_dict


def test_default_recipe_loads_and_round_trips():
    import yaml

    recipe = load_recipe(None)
    assert recipe.name == "cnn-fashion"
    assert "cnn-fashion" in builtin_recipes()
    assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))) == recipe


def test_every_builtin_recipe_loads_and_round_trips():
    import yaml

    names = builtin_recipes()
    assert {"cnn-fashion", "cnn-fashion-p875", "minilm-sentiment"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))) == recipe
    harder = load_recipe("cnn-fashion-p875")
    assert harder.prune.ratio == 0.875 and harder.prune.finetune_epochs == harder.distill.epochs == 12


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trian": {}}, r"unknown recipe key 'trian'; did you mean 'train'\?"),
        ({"train": {"epoch": 3}}, r"unknown recipe key 'train.epoch'; did you mean 'epochs'\?"),
        ({"train": {"epochs": "three"}}, r"train.epochs = 'three' has the wrong type; expected a number"),
        ({"train": {"epochs": -1}}, r"train.epochs must be >= 0"),
        ({"train": {"batch_size": 12.5}}, r"train.batch_size = 12.5 has the wrong type; expected an integer"),
        ({"prune": {"ratio": 1.5}}, r"prune.ratio must be in \[0, 1\)"),
        ({"prune": {"importance": "magnitud"}}, r"did you mean 'magnitude'\?"),
        ({"prune": {"blocks": 1.5}}, r"prune.blocks must be in \[0, 1\]"),
        ({"prune": {"blocks": 0.5, "method": "unstructured"}}, r"prune.blocks .* needs prune.method channels"),
        ({"prune": {"enabled": "yes"}}, r"prune.enabled = 'yes' has the wrong type; expected true/false"),
        ({"distill": {"alpha": 2}}, r"distill.alpha must be in \[0, 1\]"),
        ({"distill": {"augment": -1}}, r"distill.augment must be >= 0"),
        ({"quantize": {"calibration": "kl"}}, r"quantize.calibration = 'kl' is not allowed"),
        ({"target": {"name": "jetsn"}}, r"did you mean 'jetson'\?"),
        ({"bench": {"batch_sizes": []}}, r"bench.batch_sizes must list at least one"),
        ({"bench": {"batch_sizes": [1, 0]}}, r"bench.batch_sizes\[1\] must be > 0"),
        ({"train": [1, 2]}, r"train must be a mapping"),
        ({"seed": True}, r"seed = True has the wrong type; expected an integer"),
    ],
)
def test_bad_recipes_name_the_fix(data, message):
    """The schema's own checks fail at loading; those against the registries (target names, a family's settings)
    when the plug-ins are chosen, before any work."""
    from compress.plugins import choose

    with pytest.raises(RecipeError, match=message):
        choose(recipe_from_dict(data))


def test_the_recipe_is_a_schema_that_knows_no_registry():
    recipe = recipe_from_dict({"target": {"name": "jetsn"}, "model": {"arch": "nope"}})
    assert (recipe.target.name, recipe.model.arch) == ("jetsn", "nope")


def test_unknown_recipe_name_lists_builtins():
    with pytest.raises(RecipeError, match=r"recipe 'cnn-fashon' unknown; built-in: .*cnn-fashion"):
        load_recipe("cnn-fashon")


def test_malformed_yaml_gives_position(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(RecipeError, match=r"not valid YAML at line \d+, column \d+"):
        load_recipe(str(bad))
