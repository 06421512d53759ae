"""Quantization-aware training: fine-tune with INT8 fake quantization of every conv / linear weight
(per-channel, symmetric) and input (per-tensor, uint8) so the weights adapt to rounding. BatchNorm is folded
into the convolutions first, so the weights trained here are the ones ONNX Runtime quantizes afterwards with
the same scheme; the result is exported as a QDQ ONNX like any PTQ candidate."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with every conv -> batchnorm pair fused (torch.fx), as inference graphs have them."""
    from torch.fx.experimental.optimization import fuse

    return fuse(model.eval(), inplace=False)


class _FakeQuant(nn.Module):
    """Wraps a conv or linear layer; fake-quantizes its input and weight in the forward pass."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.observing = False

    def input_qparams(self) -> tuple[float, int]:
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        return scale, int(round(-lo / scale))

    def quantized_weight(self) -> torch.Tensor:
        w = self.layer.weight
        dims = tuple(range(1, w.ndim))
        scale = (w.detach().abs().amax(dim=dims) / 127.0).clamp(min=1e-8)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            with torch.no_grad():
                self.lo.copy_(torch.minimum(self.lo, x.min()))
                self.hi.copy_(torch.maximum(self.hi, x.max()))
            return self.layer(x)
        scale, zero = self.input_qparams()
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)
        w = self.quantized_weight()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


def _wrap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, _FakeQuant(child))
        else:
            _wrap(child)


def prepare(model: nn.Module, calib: np.ndarray, *, device: str | None = None) -> nn.Module:
    """Fold batchnorm, insert fake quantization and calibrate its input ranges (min/max) on `calib`."""
    qat = fold_batchnorm(model)
    _wrap(qat)
    calibrate(qat, calib, device=device)
    return qat


@torch.no_grad()
def calibrate(qat: nn.Module, calib: np.ndarray, batch_size: int = 64, *, device: str | None = None) -> None:
    """Input ranges (min/max) of every fake-quantized layer over `calib`, observed on `device` (None: the CPU);
    the model stays on the CPU. Training itself runs through `compress.training.loop.fit(..., device=)`."""
    from compress.training.device import placed, to_device

    fakes = [m for m in qat.modules() if isinstance(m, _FakeQuant)]
    for m in fakes:
        m.lo.fill_(float("inf"))
        m.hi.fill_(float("-inf"))
        m.observing = True
    qat.eval()
    with placed(device, qat):
        for i in range(0, len(calib), batch_size):
            qat(to_device(torch.from_numpy(calib[i : i + batch_size]), device))
    for m in fakes:
        m.observing = False


def strip(qat: nn.Module) -> nn.Module:
    """The float model (batchnorm folded) with the QAT-trained weights, ready for export and INT8 conversion."""
    import copy

    plain = copy.deepcopy(qat)

    def unwrap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, _FakeQuant):
                setattr(module, name, child.layer)
            else:
                unwrap(child)

    unwrap(plain)
    return plain.eval()
