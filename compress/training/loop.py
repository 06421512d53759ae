"""The training loop; fine-tuning and distillation reuse it."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.data.splits import Split
from compress.training.device import is_cuda, placed, to_device
from compress.distillation.losses import teacher_logits_tensor
from common.errors import CompressError
from common.progress import progress_bar

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LoopConfig:
    epochs: float
    batch_size: int
    lr: float
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    label_smoothing: float = 0.0
    # "bf16": convolutions and matmuls in bfloat16 (autocast) on CPUs with native bf16 (AVX512-BF16 or AMX), about
    # 1.7x faster for the width-32 CNN; changes numerics. Elsewhere (AVX2 ...) it trains in float32, as "fp32" does.
    precision: str = "fp32"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (emulated bf16 is slower than float32)."""
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _autocast(precision: str, device: str | None = None) -> contextlib.AbstractContextManager:
    if precision not in ("fp32", "bf16"):
        raise CompressError(f"precision must be fp32 or bf16, got {precision!r}")
    if precision == "bf16" and is_cuda(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16" and native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


RESIDENT_BYTES = 2 << 30  # training sets up to this size are copied to the GPU once; larger ones go batch by batch


def _batch_source(x_all: torch.Tensor, y_all: torch.Tensor, device: str | None):
    """`take(idx) -> (x, y)` on `device`. On CUDA a training set that fits (Fashion-MNIST: 190 MB) is copied to the
    GPU once, so a step moves no data; a larger one is gathered per batch into pinned memory and copied without
    blocking. On the CPU (or None): plain indexing, as before."""
    if not is_cuda(device):
        return lambda idx: (x_all[idx], y_all[idx])
    if x_all.nbytes + y_all.nbytes <= RESIDENT_BYTES:
        x_dev, y_dev = to_device(x_all, device), to_device(y_all, device)

        def take(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            idx = to_device(idx, device)
            return x_dev[idx], y_dev[idx]

        return take
    return lambda idx: (to_device(x_all[idx], device), to_device(y_all[idx], device))


def _data_parallel(model: nn.Module, device: str | None) -> nn.Module:
    """DistributedDataParallel over the ranks (gradients averaged), on this rank's GPU when it has one."""
    from torch.nn.parallel import DistributedDataParallel

    if is_cuda(device):
        return DistributedDataParallel(model, device_ids=[torch.device(device).index])
    from compress.training import distributed

    if distributed.backend() == "nccl":
        raise CompressError("the process group is NCCL but training runs on the CPU; use --device cuda, or "
                            "--device cpu for both (gloo)")
    return DistributedDataParallel(model)


def _batches(n: int, batch_size: int, steps: int, seed: int, rank: int, world: int) -> Iterator[torch.Tensor]:
    """Row indices of each step: a fresh permutation per epoch, no partial batch; every rank draws the same global
    batch and takes its own share (as DistributedSampler does)."""
    rng = np.random.default_rng(seed)
    order, cursor = rng.permutation(n), 0
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = rng.permutation(n), 0
        yield torch.from_numpy(order[cursor : cursor + batch_size][rank::world])
        cursor += batch_size


# Under bf16 autocast on the CPU, oneDNN's channels-last kernels lose to NCHW for narrow layers: the default recipe's
# student (widths 8-64) trained 1.7x faster per step in NCHW (48 against 80-90 ms on an AMX Xeon), while its width-32
# teacher (32-256) trained 2x faster in channels-last (113 against 223 ms). In float32 both layouts were within 5 %.
NARROWEST_CHANNELS_LAST_BF16 = 32


def _narrowest_conv(model: nn.Module) -> int:
    return min((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=0)


def _channels_last(modules: list[nn.Module], sample: torch.Tensor, bf16_cpu: bool = False) -> bool:
    """Switch `modules` to channels-last (convolutions train 20-30 % faster on CPU) unless the first one cannot run
    on such input (e.g. a forward that calls `.view` on a feature map), or it has layers narrower than
    NARROWEST_CHANNELS_LAST_BF16 and trains under bf16 on the CPU (`bf16_cpu`); probed in eval mode, so no
    statistic moves."""
    if sample.ndim != 4 or (bf16_cpu and _narrowest_conv(modules[0]) < NARROWEST_CHANNELS_LAST_BF16):
        return False
    for m in modules:
        m.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            for m in modules:
                m.eval()(sample.contiguous(memory_format=torch.channels_last))
        return True
    except RuntimeError:
        for m in modules:
            m.to(memory_format=torch.contiguous_format)
        return False


def _loss(logits: torch.Tensor, y: torch.Tensor, cfg: LoopConfig, loss_fn: LossFn | None,
          soft: torch.Tensor | None, teacher: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    logits = logits.float()  # a no-op in float32; under bf16 autocast the losses are computed in float32
    if loss_fn is None:
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if soft is None:
        with torch.no_grad():
            soft = teacher(x).float() if teacher is not None else logits.detach()
    return loss_fn(logits, y, soft)


def fit(
    model: nn.Module,
    data: Split,
    cfg: LoopConfig,
    *,
    seed: int,
    label: str = "train",
    teacher: nn.Module | None = None,
    teacher_logits: np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    device: str | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> list[float]:
    """Train `model` in place for `cfg.epochs` (fractions allowed) with a one-cycle schedule.

    `loss_fn(student_logits, targets, teacher_logits)` replaces cross-entropy when given (distillation). The
    teacher's logits come from `teacher_logits` (one row per training row, computed once beforehand: the loop
    shows no image twice in different forms, so they are the same each epoch) or else from running `teacher` on
    every batch. Returns the mean loss of each tenth of training, so callers can check that it decreased.

    `device` ("cuda:0" ...; None or "cpu": the CPU, exactly as before) is where the steps run: the model and the
    teacher go there for the loop and come back to the CPU after it, so checkpoints hold CPU tensors.

    `augment(x, generator)` replaces every batch by a random view of it (seeded); the teacher then labels each view
    itself (`teacher_logits` must be None: precomputed logits belong to the unaugmented rows).
    """
    from compress.training import distributed

    with placed(device, model, teacher):
        if is_cuda(device):
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels once
        return _fit(model, data, cfg, seed, label, teacher, teacher_logits, loss_fn, device, distributed, augment)


def _fit(model, data, cfg, seed, label, teacher, teacher_logits, loss_fn, device, distributed,
         augment) -> list[float]:
    n = len(data)
    total_steps = max(1, math.ceil(cfg.epochs * max(1, n // cfg.batch_size)))
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="cos"
    )
    world, rank = (distributed.world_size(), distributed.rank()) if distributed.enabled() else (1, 0)
    if distributed.enabled() and cfg.batch_size % world:
        raise CompressError(f"batch_size {cfg.batch_size} does not split evenly over {world} processes; "
                            f"use a multiple of {world}")
    soft_all = None if teacher_logits is None else to_device(teacher_logits_tensor(teacher_logits, n), device)
    torch.manual_seed(seed)
    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    take = _batch_source(x_all, y_all, device)
    modules = [model] if teacher is None else [model, teacher]
    bf16_cpu = cfg.precision == "bf16" and not is_cuda(device) and native_bf16()
    channels_last = _channels_last(modules, to_device(x_all[:2], device), bf16_cpu)  # restored afterwards
    if teacher is not None:
        teacher.eval()

    if augment is not None and teacher_logits is not None:
        raise ValueError("augment needs the teacher to label each view: pass teacher, not teacher_logits")
    views = torch.Generator().manual_seed(seed + 1)

    def loss_of(forward: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        x, y = take(idx)
        if augment is not None:
            x = augment(x, views)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        soft = None if soft_all is None else soft_all[to_device(idx, device)]
        return _loss(forward(x), y, cfg, loss_fn, soft, teacher, x)

    plan = StepPlan(total_steps, _batches(n, cfg.batch_size, total_steps, seed, rank, world), loss_of, optimizer,
                    scheduler)
    losses = run_steps(model, plan, label=label, precision=cfg.precision, device=device)
    if channels_last:
        for m in modules:
            m.to(memory_format=torch.contiguous_format)
    settle_batchnorm(model, data.x, steps_run=total_steps, device=device)
    return losses


STALE_BATCHNORM = 1e-3  # running statistics still weighting their starting values by more than this are recomputed
SETTLE_ROWS = 2048


def settle_batchnorm(model: nn.Module, x: np.ndarray, *, steps_run: int, device: str | None = None,
                     batch_size: int = 64) -> bool:
    """Recompute BatchNorm running statistics over training rows when they still carry much of what they held before
    the last `steps_run` steps (0: after pruning, which changes every statistic). A BN with momentum m keeps (1 - m)^n
    of its start after n steps: the default CNN (m 0.1, thousands of steps) keeps nothing and is left as it is, while
    EfficientNet-Lite's m 0.01 over a 124-step fine-tune kept 29 % of the unpruned net's statistics and scored chance
    in eval mode. Train mode, no gradient, a cumulative average over up to SETTLE_ROWS rows in their order."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(x) < 2:
        return False
    stale = max((1.0 - m.momentum) ** steps_run if m.momentum is not None else float(steps_run == 0) for m in norms)
    if stale <= STALE_BATCHNORM:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    rows = min(len(x), SETTLE_ROWS)
    with torch.no_grad(), placed(device, model):
        for i in range(0, rows - 1, batch_size):  # batches of at least two rows: BN needs more than one value
            model(to_device(torch.from_numpy(np.ascontiguousarray(x[i : min(i + batch_size, rows)])), device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return True


@dataclass(frozen=True)
class StepPlan:
    """What a family's training differs in: how many steps, the batch of each step (this rank's share under
    torchrun), the loss of a batch through `forward` (the model, or its DistributedDataParallel wrapper), the
    optimizer and its schedule, and gradient clipping (0: none)."""

    total_steps: int
    batches: Iterable[Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    grad_clip: float = 0.0


def run_steps(model: nn.Module, plan: StepPlan, *, label: str, precision: str, device: str | None) -> list[float]:
    """The one training loop every family uses: `plan.total_steps` optimizer steps in train mode, under bf16
    autocast when `precision` asks for it and the device computes it natively, data-parallel over the ranks under
    torchrun (gradients averaged by DistributedDataParallel), a one-line error when the loss stops being finite.
    Returns the mean loss of each tenth of training (averaged over the ranks), so callers can check it decreased."""
    from compress.training import distributed

    forward = _data_parallel(model, device) if distributed.enabled() else model
    model.train()
    losses: list[float] = []  # this rank's; averaged over ranks once at the end instead of a collective per step
    with progress_bar(label, plan.total_steps) as advance:
        for step, batch in enumerate(plan.batches):
            with _autocast(precision, device):
                loss = plan.loss(forward, batch)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise CompressError(f"{label}: loss became {losses[-1]} at step {step}; lower the learning rate")
            plan.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if plan.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), plan.grad_clip)
            plan.optimizer.step()
            plan.scheduler.step()
            advance(loss=float(np.mean(losses[-20:])))
    model.eval()
    losses = distributed.mean_across_ranks(losses)
    chunk = max(1, len(losses) // 10)
    return [float(np.mean(losses[i : i + chunk])) for i in range(0, len(losses), chunk)]


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 128, *, device: str | None = None) -> np.ndarray:
    """Logits in float32 as CPU numpy, `batch_size` rows at a time (128 keeps a CNN's activations in cache: 1.5-1.7x
    faster per row than 512 on CPU, same numbers), computed on `device` (None: the CPU)."""
    model.eval()
    with placed(device, model):
        outs = [model(to_device(torch.from_numpy(x[i : i + batch_size]), device)).float().cpu().numpy()
                for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def accuracy(model: nn.Module, split: Split, *, device: str | None = None) -> float:
    return float((predict_logits(model, split.x, device=device).argmax(1) == split.y).mean())
