"""Knowledge distillation: a student learns from the teacher's softened logits plus the true labels."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from compress.recipe import DistillConfig


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor,
            *, temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


def make_kd_loss(cfg: DistillConfig):
    def loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, targets, teacher_logits, temperature=cfg.temperature, alpha=cfg.alpha)

    return loss
