"""Structured channel pruning through torch-pruning's dependency graph (residuals stay consistent)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from compress.recipe import PruneConfig


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    params_before: int
    params_after: int
    channels_before: dict[str, int]
    channels_after: dict[str, int]


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the class logits: never prune those."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


def prune_channels(
    model: nn.Module,
    cfg: PruneConfig,
    example_inputs: torch.Tensor,
    num_classes: int,
    *,
    taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PruneResult:
    """Return a pruned copy of `model`; the input is left untouched."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    before = conv_widths(pruned)
    params_before = count_params(pruned)
    if cfg.importance == "taylor":
        importance = tp.importance.GroupTaylorImportance()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.BasePruner(
        pruned,
        example_inputs,
        importance=importance,
        pruning_ratio=cfg.ratio,
        ignored_layers=_classifier_layers(pruned, num_classes),
        round_to=cfg.round_to,
        global_pruning=False,
    )
    if cfg.importance == "taylor":
        if taylor_batch is None:
            raise ValueError("Taylor importance needs a batch of training data")
        x, y = taylor_batch
        pruned.zero_grad()
        nn.functional.cross_entropy(pruned(x), y).backward()
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    return PruneResult(pruned, params_before, count_params(pruned), before, conv_widths(pruned))
