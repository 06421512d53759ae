"""Where the training stages run (`train.device`, `compress run --device`): auto, cpu, cuda or cuda:N.

`resolve_device` and `check_ranks` are pure (what the machine has is passed in), so every case is testable on a
CPU; `current` asks torch. Models live on the CPU between stages: a loop moves its model (and teacher) to the
device for its work and back afterwards (`placed`), so checkpoints hold CPU tensors whatever the device.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator

from compress.recipe.loading import RecipeError

SETTINGS = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda)$|^cuda:(\d+)$")


def check_setting(setting: str) -> None:
    """A one-line RecipeError unless `setting` reads auto, cpu, cuda or cuda:N."""
    if not isinstance(setting, str) or not _PATTERN.match(setting):
        raise RecipeError(f"train.device must be {SETTINGS}, got {setting!r}")


def resolve_device(setting: str, *, cuda_available: bool, device_count: int, local_rank: int | None = None,
                   build: str = "") -> str:
    """The torch device string ("cpu", "cuda:0", ...) for `setting` on a machine with `device_count` GPUs.

    auto is CUDA when there is one, else the CPU. Under torchrun (`local_rank` given) auto and cuda mean GPU
    LOCAL_RANK, one GPU per rank; a fixed cuda:N is for single-process runs. `build` names torch's build in the
    error for a CUDA request on a machine without CUDA."""
    check_setting(setting)
    if setting == "cpu" or (setting == "auto" and not (cuda_available and device_count > 0)):
        return "cpu"
    if not cuda_available or device_count < 1:
        where = f" ({build})" if build else ""
        raise RecipeError(f"--device {setting}: no CUDA device here{where}; use --device cpu or auto")
    if setting.startswith("cuda:"):
        index = int(setting.split(":")[1])
        if local_rank is not None:
            raise RecipeError(f"--device {setting} pins one GPU; under --nproc each rank uses GPU LOCAL_RANK: "
                              "use --device cuda")
        if index >= device_count:
            raise RecipeError(f"--device {setting}: this machine has {device_count} CUDA device(s) "
                              f"(cuda:0..cuda:{device_count - 1})")
        return setting
    index = local_rank or 0
    if index >= device_count:
        raise RecipeError(f"rank with LOCAL_RANK {index} has no GPU: found {device_count}; use fewer processes "
                          "or --device cpu (gloo)")
    return f"cuda:{index}"


def check_ranks(nproc: int, setting: str, *, cuda_available: bool, device_count: int) -> str:
    """The process-group backend for `nproc` ranks ("nccl" or "gloo"); a one-line error before any work when
    they would run on CUDA and there are fewer GPUs than ranks (NCCL needs one GPU per rank)."""
    check_setting(setting)
    on_cuda = setting != "cpu" and (setting != "auto" or (cuda_available and device_count > 0))
    if not on_cuda:
        return "gloo"
    if setting.startswith("cuda:") and nproc > 1:
        raise RecipeError(f"--device {setting} pins one GPU; with --nproc {nproc} each rank uses GPU LOCAL_RANK: "
                          "use --device cuda")
    if not cuda_available or device_count < nproc:
        found = device_count if cuda_available else 0
        raise RecipeError(f"--nproc {nproc} needs {nproc} GPUs for NCCL, found {found}; use --nproc "
                          f"{max(1, found)} or --device cpu (gloo)")
    return "nccl"


def local_rank() -> int | None:
    """LOCAL_RANK under torchrun with more than one process, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("LOCAL_RANK", "0"))


def current(setting: str) -> str:
    """`resolve_device` for this machine and this process (torch's view of CUDA, torchrun's LOCAL_RANK)."""
    import torch

    available = torch.cuda.is_available()
    return resolve_device(setting, cuda_available=available, device_count=torch.cuda.device_count() if available else 0,
                          local_rank=local_rank(), build=f"torch {torch.__version__}")


def for_run(run) -> str:
    """The device the run's training stages use (`train.device`)."""
    return current(getattr(run.recipe.train, "device", "auto"))


def is_cuda(device: str | None) -> bool:
    return bool(device) and str(device).startswith("cuda")


def to_device(tensor, device: str | None):
    """`tensor` on `device`: from pinned memory without blocking for CUDA; untouched for the CPU (or None)."""
    if not is_cuda(device):
        return tensor
    if not tensor.is_cuda:
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@contextlib.contextmanager
def placed(device: str | None, *modules: Any) -> Iterator[None]:
    """`modules` (None skipped) on `device` inside the block, back on the CPU after it, gradients included; a
    no-op for the CPU (or None), so the CPU path is exactly what it was."""
    modules = tuple(m for m in modules if m is not None)
    if not is_cuda(device):
        yield
        return
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        for m in modules:
            m.to("cpu")
