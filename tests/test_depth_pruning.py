"""Depth pruning (compress.pruning.depth): which modules are droppable blocks, which go first (the measured KL of the
logits with each skipped), and that a model with blocks dropped and channels pruned reloads exactly from its
checkpoint. The architectures people ship go through it in tests/test_zoo.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.pruning import depth
from compress.pruning import structured as prune
from compress.recipe import PruneConfig, RecipeError, recipe_from_dict


class Residual(nn.Module):
    """x + scale * branch(x): a small `scale` makes the block nearly an identity."""

    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.scale = scale

    def forward(self, x, drop_rate: float = 0.0):  # a network that hands each block an argument, as EfficientNets do
        return x + self.scale * self.branch(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Residual(8, 1.0), Residual(8, 0.01),
                                     Plain(8, 8, 1),  # keeps the shape, no skip
                                     Plain(8, 16, 2)])  # reshapes
        self.stage = nn.Sequential(nn.Sequential(Residual(16, 1.0), Residual(16, 1.0)))  # a stage of two blocks
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, drop_rate=0.1)
        return self.head(self.stage(x).mean((2, 3)))


class Plain(nn.Module):
    """A conv block without a skip; its shape-keeping ReLU step inside is not a block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())

    def forward(self, x, drop_rate: float = 0.0):
        return self.layers(x)


def _net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def _rows(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_droppable_blocks_are_the_blocks_of_block_lists_that_keep_their_input_shape():
    """The reshaping block is not droppable; the shape-keeping layers inside blocks (a branch, a conv + ReLU) are not
    blocks; a stage that is a Sequential of blocks is looked into, not taken whole."""
    assert depth.droppable_blocks(_net(), _rows(2)) == ["blocks.0", "blocks.1", "blocks.2", "stage.0.0", "stage.0.1"]


def test_the_block_whose_skipping_moves_the_logits_least_goes_first():
    """The near-identity residual (branch x 0.01) moves the logits least; the block without a skip most."""
    model = _net()
    originals = list(model.blocks)
    influence = depth.block_influence(model, ["blocks.0", "blocks.1", "blocks.2"], _rows())
    assert min(influence, key=influence.get) == "blocks.1"
    assert max(influence, key=influence.get) == "blocks.2"
    assert depth.least_influential(influence, 1 / 3) == ["blocks.1"]
    assert depth.least_influential(influence, 2 / 3) == ["blocks.0", "blocks.1"]  # in the model's order
    assert depth.least_influential(influence, 0.5) == ["blocks.0", "blocks.1"]  # 1.5 blocks: half rounds up
    assert depth.least_influential(influence, 0.01) == ["blocks.1"]  # a fraction above 0 drops at least one
    assert depth.least_influential(influence, 0.0) == []
    assert all(a is b for a, b in zip(model.blocks, originals))  # each put back


def test_dropped_blocks_compute_what_the_model_computes_without_them():
    """Blocks only (ratio 0): the pruned model's logits equal the original's with those blocks skipped by hand, the
    same ops on the same weights (bound 1e-6 of the largest logit)."""
    model, x = _net(), _rows(8)
    result = prune.prune(model, PruneConfig(ratio=0.0, blocks=0.2), _rows(2), 10, taylor_batch=(_rows(), None))
    assert result.blocks_dropped == ["blocks.1"] and len(result.block_influence) == 5
    assert result.kept_whole == [] and result.params_after < result.params_before
    assert isinstance(model.blocks[1], Residual)  # the input model is left untouched
    by_hand = _net()
    by_hand.blocks[1] = depth.SkippedBlock()
    with torch.no_grad():
        expected, got = by_hand(x), result.model(x)
    assert float((got - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))


def test_blocks_and_channels_reload_exactly_and_a_channels_only_plan_of_version_1_still_loads(tmp_path):
    from compress.training.checkpoints import load_checkpoint, save_checkpoint

    model, x = _net(), _rows(8)
    result = prune.prune(model, PruneConfig(ratio=0.5, blocks=0.6, round_to=2), _rows(2), 10,
                         taylor_batch=(_rows(), None))
    assert len(result.blocks_dropped) == 3 and "blocks.2" not in result.blocks_dropped  # the block without a skip stays
    save_checkpoint(result.model, tmp_path / "pruned.pt")
    torch.manual_seed(7)
    reloaded = load_checkpoint(Net(), tmp_path / "pruned.pt", _rows(2))
    with torch.no_grad():
        expected, got = result.model(x), reloaded(x)
    assert float((got - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))

    channels_only = prune.prune(model, PruneConfig(ratio=0.5, round_to=2), _rows(2), 10)
    plan = dict(getattr(channels_only.model, prune.PLAN_ATTR), version=1)
    del plan["dropped_blocks"]
    replayed = prune.replay_plan(_net(), plan, _rows(2))
    assert prune.layer_widths(replayed) == prune.layer_widths(channels_only.model)


def test_a_model_without_droppable_blocks_is_one_line():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(prune.UntraceableModel, match="no droppable block.*set prune.blocks: 0"):
        prune.prune(plain, PruneConfig(ratio=0.0, blocks=0.5), _rows(2), 10)


def test_transformer_recipes_refuse_blocks_before_any_work():
    from compress.families import for_arch

    recipe = recipe_from_dict({"name": "t", "model": {"arch": "bert"}, "prune": {"blocks": 0.5},
                               "quantize": {"mode": "dynamic"}})
    with pytest.raises(RecipeError, match="prune.layers"):
        for_arch("bert").check_recipe(recipe)


def test_prune_blocks_keys_the_prune_and_widths_stages_and_its_default_leaves_earlier_keys():
    from types import SimpleNamespace

    from compress.stages.prune import prune_settings
    from compress.stages.widths import search_settings

    def keys(prune_section):
        run = SimpleNamespace(recipe=recipe_from_dict({"name": "k", "prune": prune_section}))
        return prune_settings(run), search_settings(run)

    before = keys({"ratio": "auto"})
    assert keys({"ratio": "auto", "blocks": 0.0}) == before  # a run from before prune.blocks keeps its cache
    with_blocks = keys({"ratio": "auto", "blocks": 0.5})
    assert with_blocks[0] != before[0] and with_blocks[1] != before[1]
