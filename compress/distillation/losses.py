"""Knowledge distillation: the student learns from the teacher's softened logits plus the true labels, and
optionally matches the teacher's last feature map through a learned 1x1 projection."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from common.errors import CompressError
from compress.recipe import DistillConfig

FEATURE_LAYER = "features"  # the module whose output is the last feature map (models.ResNetCNN)


def teacher_logits_tensor(teacher_logits, rows: int) -> torch.Tensor:
    """Precomputed teacher logits (one row per training row) as float32, after checking that they line up."""
    if len(teacher_logits) != rows:
        raise CompressError(f"teacher_logits has {len(teacher_logits)} rows for {rows} training rows")
    return torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32))


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor,
            *, temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    if alpha == 1.0:  # soft targets only: no label is read (unlabelled data)
        return soft
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


class _Capture:
    """Keeps the last output of `module`, or its first input with `take_input` (the classifier's features)."""

    def __init__(self, module: nn.Module, take_input: bool = False) -> None:
        self.value: torch.Tensor | None = None
        self.handle = (module.register_forward_pre_hook(self._pre_hook) if take_input
                       else module.register_forward_hook(self._hook))

    def _hook(self, _module, _inputs, output) -> None:
        self.value = output

    def _pre_hook(self, _module, inputs) -> None:
        self.value = inputs[0]


def feature_tap(model: nn.Module) -> tuple[nn.Module, bool]:
    """(module, take its input?): the `features` module's output (models.ResNetCNN's last feature map), else what
    the last Linear layer reads, the pooled features any classifier has (timm, torchvision, a user's module)."""
    try:
        return model.get_submodule(FEATURE_LAYER), False
    except AttributeError:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise CompressError("distill.feature_weight > 0 needs a `features` module or a final nn.Linear "
                                "classifier to match; set distill.feature_weight: 0") from None
        return linears[-1], True


class FeatureDistiller(nn.Module):
    """Wraps the student so the optimiser also trains the projection; forward returns the student's logits."""

    def __init__(self, student: nn.Module, teacher: nn.Module, sample: torch.Tensor) -> None:
        super().__init__()
        self.student = student
        self._student_feat = _Capture(*feature_tap(student))
        self._teacher_feat = _Capture(*feature_tap(teacher))
        with torch.no_grad():
            student.eval(), teacher.eval()
            student(sample), teacher(sample)
        s_ch, t_ch = self._student_feat.value.shape[1], self._teacher_feat.value.shape[1]
        spatial = self._student_feat.value.ndim == 4
        self.projection = nn.Conv2d(s_ch, t_ch, 1, bias=False) if spatial else nn.Linear(s_ch, t_ch, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.student(x)
        # projected here, not in the loss, so that DistributedDataParallel sees every parameter used
        self._projected = self.projection(self._student_feat.value)
        return logits

    def feature_loss(self) -> torch.Tensor:
        return F.mse_loss(self._projected, self._teacher_feat.value)

    def detach_hooks(self) -> nn.Module:
        self._student_feat.handle.remove()
        self._teacher_feat.handle.remove()
        return self.student


def make_kd_loss(cfg: DistillConfig, distiller: FeatureDistiller | None = None):
    def loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        value = kd_loss(student_logits, targets, teacher_logits, temperature=cfg.temperature, alpha=cfg.alpha)
        if distiller is not None and cfg.feature_weight > 0:
            value = value + cfg.feature_weight * distiller.feature_loss()
        return value

    return loss
