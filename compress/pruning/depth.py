"""Depth pruning: whole blocks dropped. On small inputs and few cores a narrow network is launch-bound (every layer
costs its kernel launches whatever its width: EfficientNet-Lite0 at 96 px on 2 cores gained 3.8x from 87.5 % of its
channels gone, and no more); dropping a block removes its layers outright.

A droppable block is a block of the network's block lists (a module held in an nn.Sequential or nn.ModuleList, not a
container or a bare layer itself, with layers of its own; what is inside a block is never one) whose output has its
input's shape: a ResNet's basic block without downsampling, an inverted residual with its skip, a ViT block. A
stage held by a module of its own (timm's ConvNeXt and RegNet stages) is one block, not a list of them.

The blocks dropped are those whose skipping moves the model's logits least (KL divergence on a batch of the user's
rows, each block skipped alone), so a block without a skip connection, whose removal wrecks the output, is the last
to go."""
from __future__ import annotations

import math

import torch
from torch import nn


class SkippedBlock(nn.Module):
    """Stands where a dropped block was: passes its input through (extra arguments, such as a drop-path rate that a
    network hands each block, are ignored)."""

    def forward(self, x, *args, **kwargs):
        return x


CONTAINERS = (nn.Sequential, nn.ModuleList)


def _block_level(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's blocks: modules held in an nn.Sequential / nn.ModuleList that are neither containers themselves
    nor bare layers, and have layers of their own; the layers inside a block (its depthwise step, its
    squeeze-and-excite) are not blocks."""
    found = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if (isinstance(module, CONTAINERS) and not isinstance(child, (*CONTAINERS, nn.Conv2d, nn.Linear))
                    and any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in child.modules())):
                found.append((path, child))
            else:
                walk(path + ".", child)

    walk("", model)
    return found


def droppable_blocks(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Names of the blocks whose output has their input's shape, in the order the forward pass runs them."""
    shape_kept, hooks = [], []

    def recorder(name: str):
        def record(module, inputs, output):
            first = inputs[0] if inputs else None
            if isinstance(first, torch.Tensor) and isinstance(output, torch.Tensor) and first.shape == output.shape:
                shape_kept.append(name)
        return record

    for name, block in _block_level(model):
        hooks.append(block.register_forward_hook(recorder(name)))
    try:
        with torch.no_grad():
            model.eval()(example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(shape_kept))


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put `module` where the submodule `name` is; the one it replaced."""
    parent, _, child = name.rpartition(".")
    holder = model.get_submodule(parent)
    replaced = holder.get_submodule(child)
    setattr(holder, child, module)
    return replaced


def skip(model: nn.Module, names: list[str]) -> None:
    """Replace the named blocks by SkippedBlock, in place."""
    for name in names:
        _swap(model, name, SkippedBlock())


def block_influence(model: nn.Module, names: list[str], rows: torch.Tensor) -> dict[str, float]:
    """Per block: the mean KL divergence (nats) of the model's logits on `rows` from those with that block skipped."""
    influence = {}
    model.eval()
    with torch.no_grad():
        reference = torch.log_softmax(model(rows).float(), dim=-1)
        for name in names:
            block = _swap(model, name, SkippedBlock())
            try:
                skipped = torch.log_softmax(model(rows).float(), dim=-1)
            finally:
                _swap(model, name, block)
            influence[name] = float(nn.functional.kl_div(skipped, reference, log_target=True,
                                                         reduction="batchmean"))
    return influence


def least_influential(influence: dict[str, float], fraction: float) -> list[str]:
    """The fraction x blocks (rounded half up, at least one for a fraction above 0) whose skipping moves the logits
    least, in the model's order."""
    count = 0 if fraction <= 0 else max(1, math.floor(fraction * len(influence) + 0.5))
    chosen = set(sorted(influence, key=influence.get)[:count])
    return [name for name in influence if name in chosen]
