"""Multi-process training under torchrun: PyTorch's own DistributedDataParallel, nothing home-made.

torchrun sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; every rank runs the pipeline, training stages
run on all of them (each rank takes its share of every global batch), everything else runs on rank 0.
"""
from __future__ import annotations

import datetime
import os

TIMEOUT = datetime.timedelta(minutes=10)  # a dead rank ends the run instead of hanging it


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def enabled() -> bool:
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init(device: str = "auto") -> None:
    """Join the process group torchrun prepared: NCCL when training runs on CUDA (`device`, the recipe's
    train.device: rank r on GPU LOCAL_RANK), gloo on the CPU (`--device cpu` uses gloo even where CUDA exists).
    More ranks than GPUs is a one-line error before any work."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from compress.training.device import check_ranks, current

    available = torch.cuda.is_available()
    chosen = check_ranks(world_size(), device, cuda_available=available,
                         device_count=torch.cuda.device_count() if available else 0)
    if chosen == "nccl":
        torch.cuda.set_device(torch.device(current(device)))  # collectives and barriers use this rank's GPU
    dist.init_process_group(backend=chosen, timeout=TIMEOUT)


def backend() -> str | None:
    """The process group's backend ("nccl", "gloo"), None when not distributed."""
    if not enabled():
        return None
    import torch.distributed as dist

    return str(dist.get_backend())


def _collective_device():
    """Where tensors that cross ranks live: this rank's GPU under NCCL, the CPU under gloo."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if enabled():
        import torch.distributed as dist

        if backend() == "nccl":
            dist.barrier(device_ids=[_collective_device().index])
        else:
            dist.barrier()


def mean_across_ranks(values: list[float]) -> list[float]:
    """Each value averaged over the ranks, in one all-reduce (the values themselves when not distributed)."""
    if not enabled() or not values:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [v / world_size() for v in t.cpu().tolist()]


def shutdown() -> None:
    if enabled():
        import torch.distributed as dist

        dist.destroy_process_group()


def launch_command(nproc: int, cli_args: list[str]) -> list[str]:
    """torchrun on this machine with `nproc` workers, each running `compress <cli_args>`."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "compress.cli", *cli_args]
