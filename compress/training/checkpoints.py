"""Model checkpoints as plain tensors: loading never unpickles code (weights_only=True)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.atomic import atomic_path
from common.errors import CompressError


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """The weights as plain tensors; a channel-pruned model also stores its pruning plan (JSON), so that loading
    rebuilds its exact structure. Only rank 0 writes under torchrun; the other ranks hold the same weights."""
    import json

    from compress.pruning.structured import PLAN_ATTR
    from compress.training import distributed

    if not distributed.is_main():
        return
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plan = getattr(model, PLAN_ATTR, None)
    content = tensors if plan is None else {"state_dict": tensors, "pruning_plan": json.dumps(plan)}
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def load_checkpoint(model: nn.Module, path: Path, example_inputs: torch.Tensor | None = None) -> nn.Module:
    """Load tensors into the freshly built `model`; a pruned checkpoint's plan is replayed on it first (through its
    dependency graph, traced on `example_inputs`), never guessed from the stored shapes."""
    import json

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CompressError(f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to retrain") from None
    plan = None
    if isinstance(content, dict) and isinstance(content.get("pruning_plan"), str):
        plan, content = json.loads(content["pruning_plan"]), content.get("state_dict")
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CompressError(f"checkpoint {path} does not hold a state dict of tensors")
    if plan is not None:
        from compress.pruning.structured import replay_plan

        if example_inputs is None:
            raise CompressError(f"checkpoint {path} is a pruned model: loading it needs example inputs")
        try:
            replay_plan(model, plan, example_inputs)
        except Exception as e:  # the plan does not fit this model (another architecture, another version)
            raise CompressError(f"checkpoint {path}: its pruning plan does not replay on this model "
                                f"({type(e).__name__}: {str(e)[:160]}); delete it to retrain") from None
    try:
        model.load_state_dict(content, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CompressError(f"checkpoint {path} does not fit the model: {first}") from None
    return model.eval()


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A user's pretrained weights: a safetensors file, or a torch file holding a state dict (or {"state_dict": ...}
    / {"model": ...}) read with weights_only=True; one-line error otherwise."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing file, not a tensor file, unpickling refused
        raise CompressError(f"--weights {path} cannot be read ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:200]})") from None
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CompressError(f"--weights {path} does not hold a state dict of tensors")
    return state


def classes_in_weights(path: Path, probe: nn.Module) -> int:
    """The number of classes a classifier's weights were trained for: the output rows of the module's last Linear
    (its head, in the module's own order: a file's keys may be sorted by name), read from the weights."""
    state, head = read_weights(path), last_linear(probe)
    weight = state.get(f"{head[0]}.weight") if head else None
    if weight is None or weight.ndim != 2:
        raise CompressError(f"--weights {path}: no classifier head (a last nn.Linear) to read the number of classes "
                            "from; give labelled data")
    return int(weight.shape[0])


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The module's classifier head: its last nn.Linear in the module's own order (a file's keys may be sorted by
    name), with its name; None without one."""
    heads = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return heads[-1] if heads else None


def last_linear_width(model: nn.Module) -> int | None:
    """The output width of the module's classifier head (last_linear)."""
    head = last_linear(model)
    return head[1].out_features if head else None


def load_pretrained(model: nn.Module, path: Path, *, new_head: bool = False) -> nn.Module:
    """A user's pretrained weights (read_weights) into their module; every key must fit (one-line error).

    `new_head` (transfer learning: the data has other classes than the weights): when the only keys that do not fit
    are the module's classifier head (its last nn.Linear), the head keeps its fresh initialisation and everything
    else is loaded."""
    state = read_weights(path)
    loaded = _with_new_head(model, state, path) if new_head else None
    return loaded if loaded is not None else _load_strict(model, state, path)


def _with_new_head(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module | None:
    """`state` into `model` but for its classifier head, when the head's keys are the only ones that misfit; None
    when they are not (the strict load then says what does not fit)."""
    last = last_linear(model)
    head = {f"{last[0]}.{p}" for p, _ in last[1].named_parameters()} if last else set()
    own = model.state_dict()
    misfits = {k for k, v in state.items() if k in own and v.shape != own[k].shape}
    if misfits and misfits <= head:
        missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
        if unexpected or set(missing) - head:
            first = (unexpected or sorted(set(missing) - head))[0]
            raise CompressError(f"--weights {path} does not fit the model: {'unexpected' if unexpected else 'missing'}"
                                f" key {first!r}")
        from compress.driver import log

        weight = max(misfits, key=lambda k: state[k].ndim)
        log(f"[train] --weights {Path(path).name}: new classifier head {weight.rsplit('.', 1)[0]} "
            f"({tuple(state[weight].shape)} -> {tuple(own[weight].shape)}), every other layer loaded")
        return model
    return None


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]
        raise CompressError(f"--weights {path} does not fit the model: {first}") from None
    return model

