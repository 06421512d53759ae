"""Pruning and distillation on a small CNN: structure (widths, sparsity) and numbers (losses)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.splits import Split
from compress.pruning import structured as prune
from compress.training import loop as train
from compress.distillation.losses import FeatureDistiller, kd_loss, make_kd_loss
from common.errors import CompressError
from compress.recipe import DistillConfig, PruneConfig
from models import build_model


def _model(width=16, seed=0):
    torch.manual_seed(seed)
    return build_model("resnet-cnn", (1, 16, 16), 4, width=width).eval()


def _toy_split(n=512, seed=0) -> Split:
    """Four classes told apart by which image quadrant is bright: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 0, r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] += 1.5
    return Split(x, y.astype(np.int64))


EXAMPLE = torch.zeros(2, 1, 16, 16)


@pytest.mark.parametrize("ratio, round_to", [(0.5, 8), (0.3, 4), (0.75, 2)])
def test_channel_pruning_rounds_widths_and_keeps_residuals_consistent(ratio, round_to):
    model = _model()
    result = prune.prune(model, PruneConfig(ratio=ratio, round_to=round_to), EXAMPLE, num_classes=4)
    for name, width in result.channels_after.items():
        assert width % round_to == 0, (name, width)
        assert width < result.channels_before[name]
    assert result.params_after < result.params_before
    assert prune.conv_widths(model) == result.channels_before  # the input model is untouched
    out = result.model(torch.randn(3, 1, 16, 16))  # residual adds still line up
    assert out.shape == (3, 4)


def test_layers_the_ratio_would_take_below_round_to_keep_round_to_channels():
    """87.5 % of 16 channels leaves 2: torch-pruning alone rounds that down to 0 and then skips the layer (it stayed
    at 16). Every layer must still shrink, to exactly `round_to` where the ratio asks for fewer."""
    result = prune.prune(_model(), PruneConfig(ratio=0.875, round_to=8), EXAMPLE, num_classes=4)
    before, after = result.channels_before, result.channels_after
    for name, width in after.items():
        assert width == max(8, before[name] // 8), (name, before[name], width)
    assert result.model(torch.randn(3, 1, 16, 16)).shape == (3, 4)


def test_global_scope_prunes_layers_unevenly():
    result = prune.prune(_model(), PruneConfig(ratio=0.5, scope="global", round_to=1), EXAMPLE, num_classes=4)
    kept = [result.channels_after[n] / result.channels_before[n] for n in result.channels_after]
    assert max(kept) - min(kept) > 0.05


def test_iterative_pruning_fine_tunes_between_steps():
    calls = []
    cfg = PruneConfig(ratio=0.5, iterative_steps=3, round_to=1)
    result = prune.prune(_model(), cfg, EXAMPLE, 4, between_steps=lambda m, step: calls.append(step))
    assert calls == [0, 1]
    assert all(w == b // 2 for w, b in zip(result.channels_after.values(), result.channels_before.values()))


def test_unstructured_pruning_reaches_the_ratio_without_shrinking_tensors():
    model = _model()
    result = prune.prune(model, PruneConfig(method="unstructured", ratio=0.6), EXAMPLE, 4)
    prune.make_sparsity_permanent(result.model)
    assert result.params_after == result.params_before  # dense tensors: nothing to gain on ORT CPU
    assert 0.55 <= prune.weight_sparsity(result.model) <= 0.62


def test_two_four_sparsity_zeros_two_of_every_four_inputs():
    result = prune.prune(_model(), PruneConfig(method="2:4"), EXAMPLE, 4)
    prune.make_sparsity_permanent(result.model)
    conv = result.model.features[1].conv2  # 32 input channels
    groups = conv.weight.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert bool(((groups == 0).sum(dim=1) >= 2).all())


def test_kd_loss_reduces_to_cross_entropy_without_the_teacher_term():
    s, t = torch.randn(8, 4), torch.randn(8, 4)
    y = torch.randint(0, 4, (8,))
    assert torch.allclose(kd_loss(s, y, t, temperature=4.0, alpha=0.0), torch.nn.functional.cross_entropy(s, y))
    assert kd_loss(t, y, t, temperature=4.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_with_feature_matching_decreases_the_loss_and_learns():
    data = _toy_split()
    teacher = _model(width=16, seed=1)
    train.fit(teacher, data, train.LoopConfig(3.0, 32, 0.05), seed=0, label="teacher")
    assert train.accuracy(teacher, data) >= 0.9
    student = prune.prune(teacher, PruneConfig(ratio=0.5, round_to=4), EXAMPLE, 4).model
    cfg = DistillConfig(epochs=2.0, feature_weight=1.0)
    distiller = FeatureDistiller(student, teacher, torch.from_numpy(data.x[:2]))
    curve = train.fit(distiller, data, train.LoopConfig(2.0, 32, 0.05), seed=0, label="distill", teacher=teacher,
                      loss_fn=make_kd_loss(cfg, distiller))
    distiller.detach_hooks()
    assert curve[-1] < 0.5 * curve[0]
    assert train.accuracy(student, data) >= 0.9


def test_distilling_from_precomputed_teacher_logits_matches_running_the_teacher():
    """The pipeline computes the teacher's logits once; training from them must follow the same path as running
    the teacher on every batch. In float32 the two paths need not agree bit for bit: the teacher runs at another
    batch size and memory layout (oneDNN picks other kernels on AVX-512 / AMX than on AVX2, reassociating sums),
    and two epochs amplify that rounding past any fixed bound. In float64 the reassociation is ~1e-16 relative and
    the logits' one rounding to float32 ~6e-8, so after 2 epochs every student weight stays within 1e-5 (abs)."""
    data = _toy_split()
    data = Split(data.x.astype(np.float64), data.y)
    teacher = _model(width=16, seed=1).double()
    train.fit(teacher, data, train.LoopConfig(1.0, 32, 0.05), seed=0, label="teacher")
    loss = make_kd_loss(DistillConfig(temperature=2.0, alpha=0.5))
    students = []
    for source, soft in ((teacher, None), (None, train.predict_logits(teacher, data.x))):
        student = _model(width=8, seed=2).double()
        train.fit(student, data, train.LoopConfig(2.0, 32, 0.05), seed=0, label="distill", teacher=source,
                  teacher_logits=soft, loss_fn=loss)
        students.append(student.state_dict())
    worst = max(float((students[0][k].double() - students[1][k].double()).abs().max()) for k in students[0])
    assert worst <= 1e-5, worst
    with pytest.raises(CompressError, match="teacher_logits has 3 rows for 512"):
        train.fit(_model(width=8), data, train.LoopConfig(0.1, 32, 0.05), seed=0, teacher=teacher,
                  teacher_logits=np.zeros((3, 4), np.float32), loss_fn=loss)


def test_batchnorm_statistics_are_recomputed_only_when_stale():
    """(1 - momentum)^steps of the old statistics left: 0.99^10 = 0.90 is stale and recomputed as the exact mean and
    (unbiased) variance over the rows; 0.9^1000 is nothing and the statistics are left as they are."""
    from torch import nn

    from compress.training.loop import settle_batchnorm

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01)
    model = nn.Sequential(conv, bn).eval()
    x = (torch.randn(128, 1, 8, 8) * 2 + 5).numpy()
    assert settle_batchnorm(model, x, steps_run=10, batch_size=128)
    with torch.no_grad():
        features = conv(torch.from_numpy(x)).transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(bn.running_mean, features.mean(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, features.var(1, unbiased=True), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.01 and not model.training
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.1)).eval()
    before = fresh[1].running_mean.clone()
    assert not settle_batchnorm(fresh, x, steps_run=1000)
    assert torch.equal(fresh[1].running_mean, before)
