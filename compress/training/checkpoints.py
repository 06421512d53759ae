"""Model checkpoints as plain tensors: loading never unpickles code (weights_only=True)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.atomic import atomic_path
from common.errors import CompressError
from models import resize_to_state_dict


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """Only rank 0 writes under torchrun; the other ranks hold the same weights."""
    from compress.training import distributed

    if not distributed.is_main():
        return
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    """Load tensors into `model`, resizing layers to the stored shapes (pruned models)."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CompressError(f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to retrain") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CompressError(f"checkpoint {path} does not hold a state dict of tensors")
    resize_to_state_dict(model, state_dict)
    try:
        model.load_state_dict(state_dict, strict=True)
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
    state = read_weights(path)
    heads = [name for name, m in probe.named_modules() if isinstance(m, nn.Linear)]
    weight = state.get(f"{heads[-1]}.weight") if heads else None
    if weight is None or weight.ndim != 2:
        raise CompressError(f"--weights {path}: no classifier head (a last nn.Linear) to read the number of classes "
                            "from; give labelled data")
    return int(weight.shape[0])


def load_pretrained(model: nn.Module, path: Path) -> nn.Module:
    """A user's pretrained weights (read_weights) into their module; every key must fit (one-line error)."""
    state = read_weights(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]
        raise CompressError(f"--weights {path} does not fit the model: {first}") from None
    return model
