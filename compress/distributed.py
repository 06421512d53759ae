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


def init() -> None:
    """Join the process group torchrun prepared: NCCL with CUDA, gloo on CPU."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)


def barrier() -> None:
    if enabled():
        import torch.distributed as dist

        dist.barrier()


def mean_across_ranks(values: list[float]) -> list[float]:
    """Each value averaged over the ranks, in one all-reduce (the values themselves when not distributed)."""
    if not enabled() or not values:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [v / world_size() for v in t.tolist()]


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
