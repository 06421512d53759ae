"""Random views of image batches for distillation on small sets: the teacher labels every view afresh, so a few
hundred images give as many distinct targets as there are steps (label-free: no label is read)."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

MIN_AREA = 0.35  # of the image kept by a crop (torchvision's RandomResizedCrop default is 0.08; small sets of
# the target's own photos gain more from views that still show the object than from extreme crops)


def random_views(x: torch.Tensor, generator: torch.Generator, *, channels_last_layout: bool = False) -> torch.Tensor:
    """Random resized crops (area MIN_AREA..1, aspect 3/4..4/3) with horizontal flips of a batch of images,
    resampled bilinearly to the batch's own size. `x` is NCHW, or NHWC with `channels_last_layout`."""
    if x.ndim != 4:
        return x
    if channels_last_layout:
        return random_views(x.permute(0, 3, 1, 2), generator).permute(0, 2, 3, 1)
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    area, ratio = uniform(MIN_AREA, 1.0), torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    sx, sy = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sx) * uniform(-1, 1), (1 - sy) * uniform(-1, 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
