"""Pruning. Structured channel pruning goes through torch-pruning's dependency graph, so coupled layers
(residual adds, batch norms, the next layer's inputs) shrink together; unstructured and 2:4 sparsity are
options that shrink nothing an ONNX Runtime CPU kernel can skip (the report says so)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compress.recipe import PruneConfig

PLAN_ATTR = "compress_pruning_plan"  # on a channel-pruned model: how to rebuild it from a fresh one (checkpoints)
PLAN_VERSION = 2  # 2: blocks dropped (compress.pruning.depth) before the channels; 1 (channels only) still loads

SPARSITY_NOTE = ("unstructured and 2:4 sparsity keep dense weight tensors: ONNX Runtime on CPU runs them at "
                 "dense speed and the file does not shrink; use method: channels for speed")


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    params_before: int
    params_after: int
    channels_before: dict[str, int]
    channels_after: dict[str, int]
    sparsity: float  # fraction of zero weights in conv / linear layers
    kept_whole: list[str]  # conv / linear layers channel pruning left at full width (the classifier head aside)
    heads: dict[str, int]  # attention modules (timm layout: qkv Linear, num_heads) -> heads kept
    block_influence: dict[str, float]  # droppable block -> KL (nats) of the logits with it skipped; {} when blocks 0
    blocks_dropped: list[str]


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every conv and linear layer (what channel pruning changes)."""
    return {name: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Attention in timm's layout (ViT, DeiT, many small ViTs): a `qkv` Linear and an int `num_heads`."""
    return {name: m for name, m in model.named_modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)}


def attention_heads(model: nn.Module) -> dict[str, int]:
    return {name: m.num_heads for name, m in _attention_modules(model).items()}


def head_attributes(model: nn.Module) -> dict[str, dict[str, int]]:
    """What a replayed plan must set besides the tensors: each attention module's heads and head width."""
    return {name: {"num_heads": m.num_heads, "head_dim": m.qkv.out_features // (3 * m.num_heads)}
            for name, m in _attention_modules(model).items()}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(1, total)


def _classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the class logits: never prune those."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


def prune(model: nn.Module, cfg: PruneConfig, example_inputs: torch.Tensor, num_classes: int, *,
          taylor_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
          between_steps: Callable[[nn.Module, int], None] | None = None,
          device: str | None = None) -> PruneResult:
    """Return a pruned copy of `model` (the input is left untouched).

    With `cfg.iterative_steps` > 1 the ratio is reached in steps and `between_steps(model, step)` runs after
    every step but the last (the pipeline fine-tunes there). Taylor importance's forward and backward pass runs on
    `device` (None: the CPU); the dependency graph and the pruning itself stay on the CPU.
    """
    pruned = copy.deepcopy(model).eval()
    before, widths_before = conv_widths(pruned), layer_widths(pruned)
    params_before = count_params(pruned)
    influence, dropped = {}, []
    if cfg.blocks > 0:
        influence, dropped = _drop_blocks(pruned, cfg.blocks, example_inputs,
                                          example_inputs if taylor_batch is None else taylor_batch[0], device)
    if cfg.method == "channels":
        history = (_prune_channels(pruned, cfg, example_inputs, num_classes, taylor_batch, between_steps, device)
                   if cfg.ratio > 0 else [])
        setattr(pruned, PLAN_ATTR, {"version": PLAN_VERSION, "dropped_blocks": dropped,
                                    "history": _plain_history(history), "attributes": head_attributes(pruned)})
    else:
        _prune_unstructured(pruned, cfg, num_classes)
    pruned.zero_grad(set_to_none=True)
    after = layer_widths(pruned)
    head = {id(m) for m in _classifier_layers(pruned, num_classes)}
    named = dict(pruned.named_modules())
    kept = sorted(n for n, w in after.items() if w == widths_before.get(n) and id(named[n]) not in head)
    return PruneResult(pruned, params_before, count_params(pruned), before, conv_widths(pruned),
                       weight_sparsity(pruned), kept if cfg.method == "channels" and cfg.ratio > 0 else [],
                       attention_heads(pruned), influence, dropped)


def _drop_blocks(model: nn.Module, fraction: float, example_inputs: torch.Tensor, rows: torch.Tensor,
                 device: str | None) -> tuple[dict[str, float], list[str]]:
    """Skip the `fraction` of droppable blocks whose skipping moves the logits on `rows` least, in place (the
    skipped forward passes run on `device`)."""
    from compress.pruning import depth
    from compress.training.device import placed, to_device

    try:
        candidates = depth.droppable_blocks(model, example_inputs)
        with placed(device, model):
            influence = depth.block_influence(model, candidates, to_device(rows, device)) if candidates else {}
    except Exception as e:  # a forward that reads a block's attributes cannot run with the block skipped
        raise UntraceableModel(f"prune.blocks: this model's blocks cannot be skipped one at a time "
                               f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}); set prune.blocks: 0"
                               ) from None
    if not candidates:
        raise UntraceableModel("prune.blocks: this model has no droppable block (a block of an nn.Sequential or "
                               "nn.ModuleList whose output keeps its input's shape); set prune.blocks: 0")
    dropped = depth.least_influential(influence, fraction)
    depth.skip(model, dropped)
    return influence, dropped


def _prune_channels(model, cfg, example_inputs, num_classes, taylor_batch, between_steps, device=None) -> list:
    import torch_pruning as tp

    if cfg.importance == "taylor":
        importance = tp.importance.GroupTaylorImportance()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    ignored = _classifier_layers(model, num_classes)
    attention = _attention_modules(model).values()
    try:
        pruner = tp.pruner.BasePruner(
            model, example_inputs, importance=importance, pruning_ratio=cfg.ratio,
            pruning_ratio_dict=_floor_at_round_to(model, cfg, ignored),
            ignored_layers=ignored, round_to=cfg.round_to,
            global_pruning=cfg.scope == "global", iterative_steps=cfg.iterative_steps,
            num_heads={m.qkv: m.num_heads for m in attention}, prune_num_heads=bool(attention),
            head_pruning_ratio=cfg.ratio if attention else 0.0,
            prune_head_dims=False,  # whole heads go: every head keeps its width, as the attention code assumes
        )
    except Exception as e:  # torch-pruning traces the forward; an op it cannot follow stops it here
        raise UntraceableModel(f"torch-pruning cannot trace this model ({type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0][:200]}); set prune.enabled: false") from None
    for step in range(cfg.iterative_steps):
        if cfg.importance == "taylor":
            if taylor_batch is None:
                raise ValueError("Taylor importance needs a batch of training data")
            _taylor_gradients(model, taylor_batch, device)
        pruner.step()
        for m in attention:  # the forward reshapes by these: follow the heads torch-pruning kept
            m.num_heads = pruner.num_heads[m.qkv]
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
        if between_steps is not None and step < cfg.iterative_steps - 1:
            between_steps(model, step)
    return pruner.DG.pruning_history()


class UntraceableModel(ValueError):
    """torch-pruning could not build the model's dependency graph (one line naming the op or error)."""


def _plain_history(history) -> list[list]:
    """torch-pruning's pruning history as JSON values: [module name, output channels?, [indices]] per step."""
    return [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in history]


def replay_plan(model: nn.Module, plan: dict, example_inputs: torch.Tensor) -> nn.Module:
    """Prune a freshly built `model` exactly as the recorded `plan` did (torch-pruning's history replayed through
    the model's own dependency graph, so grouped and depthwise layers keep their groups), then attach the plan."""
    import torch_pruning as tp

    if plan.get("version") not in (1, PLAN_VERSION):
        raise ValueError(f"pruning plan version {plan.get('version')!r}, expected 1 or {PLAN_VERSION}")
    from compress.pruning.depth import skip

    skip(model, plan.get("dropped_blocks", []))
    graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example_inputs, verbose=False)
    graph.load_pruning_history([(name, out, list(idxs)) for name, out, idxs in plan["history"]])
    for name, attributes in plan.get("attributes", {}).items():
        for attribute, value in attributes.items():
            setattr(model.get_submodule(name), attribute, value)
    setattr(model, PLAN_ATTR, plan)
    return model


def _taylor_gradients(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], device: str | None) -> None:
    """The gradients Taylor importance reads (weight x gradient), from one batch's loss; computed on `device`, the
    model (gradients included) back on the CPU afterwards."""
    from compress.training.device import placed, to_device

    x, y = batch
    model.zero_grad()
    with placed(device, model):
        nn.functional.cross_entropy(model(to_device(x, device)), to_device(y, device)).backward()


def _floor_at_round_to(model: nn.Module, cfg: PruneConfig, ignored: list[nn.Module]) -> dict[nn.Module, float]:
    """Per-layer ratios for the layers that `cfg.ratio` would take below `round_to` channels.

    torch-pruning rounds a layer's remaining width *down* to a multiple of `round_to`; below `round_to` that is 0,
    and it then leaves the whole layer unpruned (ratio 0.875 with `round_to: 8` kept a 32-channel stem at 32, the
    layer with the largest feature maps). These layers keep `round_to` channels instead (the half channel of
    margin survives the rounding).
    """
    if cfg.scope == "global":
        return {}
    ignored_ids = {id(m) for m in ignored}
    floors = {}
    for m in model.modules():
        width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features if isinstance(m, nn.Linear) else 0
        if id(m) in ignored_ids or width <= cfg.round_to or width * (1 - cfg.ratio) >= cfg.round_to:
            continue
        floors[m] = 1.0 - (cfg.round_to + 0.5) / width
    return floors


def _prune_unstructured(model: nn.Module, cfg: PruneConfig, num_classes: int) -> None:
    """Zero weights in place: magnitude (per layer) or 2:4 (two of every four along the input axis)."""
    skip = {id(m) for m in _classifier_layers(model, num_classes)}
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)) or id(m) in skip:
                continue
            w = m.weight
            if cfg.method == "2:4":
                flat = w.permute(0, *range(2, w.ndim), 1).reshape(-1, w.shape[1]) if w.ndim == 4 else w
                if flat.shape[1] % 4:
                    continue  # layers whose input width is not a multiple of 4 stay dense
                groups = flat.reshape(-1, 4)
                keep = groups.abs().topk(2, dim=1).indices
                mask = torch.zeros_like(groups).scatter_(1, keep, 1.0).reshape(flat.shape)
                if w.ndim == 4:
                    mask = mask.reshape(w.shape[0], *w.shape[2:], w.shape[1]).permute(0, 3, 1, 2)
            else:
                k = int(cfg.ratio * w.numel())
                if k == 0:
                    continue
                threshold = w.abs().flatten().kthvalue(k).values
                mask = (w.abs() > threshold).float()
            torch_prune.custom_from_mask(m, "weight", mask)


def make_sparsity_permanent(model: nn.Module) -> None:
    """Fold torch's pruning masks into the weights so checkpoints hold plain tensors."""
    for m in model.modules():
        if hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")


def keep_zeros(model: nn.Module) -> None:
    """Re-attach masks for weights that are already zero, so further training keeps the sparsity."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and bool((m.weight == 0).any()):
            torch_prune.custom_from_mask(m, "weight", (m.weight != 0).float())
