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
    from compress import distributed

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
