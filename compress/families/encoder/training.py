"""Training and evaluating a BERT-style encoder classifier on tokenized text: the loop config, cropped-copy
augmentation, length-bucketed dynamically padded batches, `fit_text` (fine-tuning, or distillation from
precomputed teacher logits and optionally hidden states), the skip-layer targets and hidden-state loss of
DistilBERT-style distillation, and batched prediction and accuracy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.data.tokens import EncodedSplit, logits_by_length, sorted_chunks
from common.errors import CompressError
from models.transformer import EncoderClassifier


# -- training ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextLoopConfig:
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps with a linear warm-up; then a linear decay to 0
    grad_clip: float = 1.0
    temperature: float = 2.0  # distillation only
    alpha: float = 0.9  # weight of the soft (teacher) term in distillation
    precision: str = "fp32"  # "bf16": autocast on CPUs with native bf16 and on CUDA (compress.training.loop)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise CompressError(f"epochs, batch_size and lr must be positive, got {self.epochs}, "
                                f"{self.batch_size}, {self.lr}")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise CompressError("warmup must lie in [0, 1), alpha in [0, 1] and temperature above 0")


def crop_copies(data: EncodedSplit, copies: int, seed: int, *, keep: tuple[float, float] = (0.4, 0.9)) -> EncodedSplit:
    """`copies` cropped versions of every row: a random contiguous span of 40-90 % of its tokens between the
    row's first and last token ([CLS] ... [SEP] stay). Labels are the source rows'; the distillation stage
    relabels them with the teacher. Distilling on such crops shows the student the teacher's graded answers on
    partial reviews, not only its near-certain answers on the training texts it was fitted to."""
    rng = np.random.default_rng(seed)
    n, width = data.input_ids.shape
    ids = np.zeros((n * copies, width), data.input_ids.dtype)
    mask = np.zeros_like(ids, dtype=data.attention_mask.dtype)
    lengths = data.lengths
    for c in range(copies):
        for i in range(n):
            length = int(lengths[i])
            inner = length - 2
            row = c * n + i
            if inner < 2:  # nothing to crop
                ids[row, :length], mask[row, :length] = data.input_ids[i, :length], 1
                continue
            span = max(1, int(round(inner * rng.uniform(*keep))))
            start = 1 + int(rng.integers(0, inner - span + 1))
            kept = np.concatenate([data.input_ids[i, :1], data.input_ids[i, start : start + span],
                                   data.input_ids[i, length - 1 : length]])
            ids[row, : len(kept)], mask[row, : len(kept)] = kept, 1
    return EncodedSplit(ids, mask, np.tile(data.y, copies))


def with_rows(a: EncodedSplit, b: EncodedSplit) -> EncodedSplit:
    """`a` followed by `b` (same width)."""
    return EncodedSplit(np.concatenate([a.input_ids, b.input_ids]), np.concatenate([a.attention_mask, b.attention_mask]),
                        np.concatenate([a.y, b.y]))


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows: shuffle, sort within pools of `pool` batches, shuffle batches.

    Padding each batch only to its longest row then costs little (the median review is ~73 tokens of 128).
    """
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit_text(model: EncoderClassifier, data: EncodedSplit, cfg: TextLoopConfig, *, seed: int = 0,
             teacher_logits: np.ndarray | None = None, teacher_hidden: "HiddenTargets | None" = None,
             hidden_weight: float = 0.0, label: str = "train", device: str | None = None) -> list[float]:
    """Train in place with AdamW and linear warm-up/decay over length-bucketed, dynamically padded batches.

    With `teacher_logits` (one row per training row, e.g. from `predict_text_logits(teacher, data)`), the loss
    is distillation (`compress.distillation.losses.kd_loss`); precomputing them saves a teacher forward per step.
    Returns the mean loss of each tenth of training. The steps run on `device` (None or "cpu": the CPU, as
    before; batches from pinned memory on CUDA); the model is back on the CPU afterwards.
    """
    from compress.training.device import placed

    with placed(device, model):
        return _fit_text(model, data, cfg, seed, teacher_logits, teacher_hidden, hidden_weight, label, device)


def _fit_text(model, data, cfg, seed, teacher_logits, teacher_hidden, hidden_weight, label, device) -> list[float]:
    from compress.distillation.losses import kd_loss, teacher_logits_tensor
    from compress.training import distributed
    from compress.training.device import to_device
    from compress.training.loop import StepPlan, run_steps

    world, rank = (distributed.world_size(), distributed.rank()) if distributed.enabled() else (1, 0)
    hidden = teacher_hidden is not None and hidden_weight > 0
    if hidden and world > 1:
        raise CompressError("hidden-state distillation (distill.hidden_weight) runs in one process; set it to 0 "
                            "or train with --nproc 1")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    total = max(1, math.ceil(cfg.epochs * math.ceil(len(data) / cfg.batch_size)))
    warm = int(cfg.warmup * total)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    soft = None if teacher_logits is None else to_device(teacher_logits_tensor(teacher_logits, len(data)), device)

    def batches():
        pending: list[np.ndarray] = []
        for _ in range(total):
            if not pending:
                pending = length_batches(data.lengths, cfg.batch_size, rng)
            yield pending.pop()[rank::world]  # every rank draws the same global batch and takes its share

    def loss_of(forward: nn.Module, idx: np.ndarray) -> torch.Tensor:
        b = data.take(idx)
        ids, mask = (to_device(torch.from_numpy(a), device) for a in (b.input_ids, b.attention_mask))
        if hidden:
            logits, states = model.forward_with_hidden(ids, mask)
            target = to_device(teacher_hidden.batch(idx, ids.shape[1]), device)
            extra = hidden_weight * hidden_loss(states, target, mask)
        else:
            logits, extra = forward(ids, mask), 0.0
        logits, y = logits.float(), to_device(torch.from_numpy(b.y), device)
        if soft is None:
            return F.cross_entropy(logits, y) + extra
        rows = to_device(torch.from_numpy(idx), device)
        return kd_loss(logits, y, soft[rows], temperature=cfg.temperature, alpha=cfg.alpha) + extra

    plan = StepPlan(total, batches(), loss_of, optimizer, scheduler, grad_clip=cfg.grad_clip)
    return run_steps(model, plan, label=label, precision=cfg.precision, device=device)


def skip_layer_targets(keep: Sequence[int], teacher_layers: int) -> tuple[int, ...]:
    """For a student holding teacher layers `keep`: the teacher layer whose output each student layer learns.

    Student layer i starts as teacher layer keep[i] and stands in for keep[i] .. keep[i+1]-1, so it is taught the
    output of keep[i+1]-1 (the last one: the teacher's last layer). 6 -> 3 with (0, 2, 4) gives (1, 3, 5).
    """
    keep = tuple(keep)
    return tuple(keep[i + 1] - 1 if i + 1 < len(keep) else teacher_layers - 1 for i in range(len(keep)))


@dataclass(frozen=True)
class HiddenTargets:
    """The teacher's hidden states at the chosen layers, per training row, cut to the row's length (float16)."""

    layers: tuple[int, ...]
    rows: tuple[np.ndarray, ...]  # row i: [length_i, len(layers), hidden]

    def batch(self, idx: np.ndarray, width: int) -> torch.Tensor:
        """[batch, width, len(layers), hidden] float32, zero beyond each row's length."""
        first = self.rows[int(idx[0])]
        out = np.zeros((len(idx), width, *first.shape[1:]), np.float32)
        for j, i in enumerate(idx):
            row = self.rows[int(i)][:width]
            out[j, : len(row)] = row
        return torch.from_numpy(out)


def hidden_loss(student: list[torch.Tensor], target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers and real tokens of 1 - cosine(student, teacher) (DistilBERT's hidden-state loss)."""
    real = mask.bool()
    losses = [(1.0 - F.cosine_similarity(h, target[:, :, j], dim=-1))[real].mean() for j, h in enumerate(student)]
    return torch.stack(losses).mean()


@torch.no_grad()
def teacher_outputs(teacher: EncoderClassifier, data: EncodedSplit, layers: Sequence[int], *,
                    batch_size: int = 64, device: str | None = None) -> tuple[np.ndarray, HiddenTargets]:
    """The teacher's logits and its hidden states at `layers` for every row (one pass, before distillation),
    computed on `device` (None: the CPU), returned as CPU arrays."""
    from compress.training.device import placed, to_device

    teacher.eval()
    logits = np.zeros((len(data), teacher.config.num_classes), np.float32)
    rows: list[np.ndarray | None] = [None] * len(data)
    with placed(device, teacher):
        for idx in sorted_chunks(data, batch_size):
            b = data.take(idx)
            ids, mask = (to_device(torch.from_numpy(a), device) for a in (b.input_ids, b.attention_mask))
            out, hidden = teacher.forward_with_hidden(ids, mask)
            logits[idx] = out.cpu().numpy()
            stacked = torch.stack([hidden[k] for k in layers], dim=2).to(torch.float16).cpu().numpy()
            for j, i in enumerate(idx):
                rows[int(i)] = stacked[j, : int(b.attention_mask[j].sum())].copy()
    return logits, HiddenTargets(tuple(layers), tuple(rows))


@torch.no_grad()
def predict_text_logits(model: nn.Module, data: EncodedSplit, *, batch_size: int = 64,
                        device: str | None = None) -> np.ndarray:
    """Logits in the rows' order as CPU numpy, computed on `device` (None: the CPU); batches of similar length,
    each padded to its longest row."""
    from compress.training.device import placed, to_device

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return model(to_device(torch.from_numpy(ids), device), to_device(torch.from_numpy(mask), device)).cpu().numpy()

    model.eval()
    with placed(device, model):
        return logits_by_length(data, batch_size, run)


def accuracy_of(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())
