"""Empirical bias correction: the shift it computes equals the real convolution's, and after it the INT8 model's
output channel means match FP32's within what input and output rounding can move them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from compress.quantization.bias_correction import correct_biases, output_shift


class _Node:
    """The two fields output_shift reads from an onnx NodeProto."""

    def __init__(self, op_type: str, **attrs) -> None:
        import onnx

        self.op_type = op_type
        self.attribute = [onnx.helper.make_attribute(k, v) for k, v in attrs.items()]


@pytest.mark.parametrize("c_in,c_out,k,stride,pad,dilation,groups", [
    (8, 8, 3, 2, 1, 1, 8),    # depthwise, stride 2
    (8, 8, 5, 1, 2, 1, 8),    # depthwise 5x5
    (6, 4, 3, 1, 2, 2, 2),    # grouped, dilated
    (5, 7, 1, 1, 0, 1, 1),    # pointwise
    (3, 4, 3, 2, 0, 1, 1),    # stem-like, no padding
])
def test_output_shift_equals_the_convolutions_mean(c_in, c_out, k, stride, pad, dilation, groups):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, (4, c_in, 13, 11)).astype(np.float32)
    delta = rng.normal(0, 0.1, (c_out, c_in // groups, k, k)).astype(np.float32)
    node = _Node("Conv", strides=[stride] * 2, pads=[pad] * 4, dilations=[dilation] * 2, group=groups)
    want = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(delta).double(), stride=stride, padding=pad,
                    dilation=dilation, groups=groups).mean((0, 2, 3)).numpy()
    # float64 both ways: only summation order differs
    np.testing.assert_allclose(output_shift(node, x, delta), want, rtol=1e-9, atol=1e-12)


def test_output_shift_of_gemm():
    rng = np.random.default_rng(1)
    x, delta = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(output_shift(_Node("Gemm", transB=1), x, delta), (x @ delta.T).mean(0), rtol=1e-5)
    np.testing.assert_allclose(output_shift(_Node("Gemm"), x, delta.T), (x @ delta.T).mean(0), rtol=1e-5)


def _coarse_depthwise() -> nn.Module:
    """A depthwise 3x3 whose rounding error has a large mean: per channel one weight of 10 and eight of 0.035,
    under half a per-channel INT8 step (10 / 127 / 2 = 0.039), so all eight round to zero; inputs are all positive."""
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    with torch.no_grad():
        conv.weight.fill_(0.035)
        conv.weight[:, 0, 1, 1] = 10.0
        conv.bias.zero_()
    return nn.Sequential(nn.ReLU6(), conv).eval()


def test_corrected_int8_matches_fp32_channel_means(tmp_path):
    import onnx
    from onnx import numpy_helper

    from compress.quantization.search import _predict
    from compress.quantization.static import preprocess_for_quantization, quantize_static_qdq
    from compress.recipe import QuantConfig

    rng = np.random.default_rng(2)
    x = rng.uniform(1.0, 5.0, (64, 4, 12, 12)).astype(np.float32)
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(_coarse_depthwise(), torch.from_numpy(x[:1]), str(fp32), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    pre, int8, fixed, fixed8 = (tmp_path / n for n in ("pre.onnx", "int8.onnx", "fixed.onnx", "fixed8.onnx"))
    preprocess_for_quantization(fp32, pre)
    cfg = QuantConfig(per_channel=True)
    quantize_static_qdq(pre, int8, x, cfg, preprocessed=True)
    stats = correct_biases(pre, int8, fixed, x)
    quantize_static_qdq(fixed, fixed8, x, cfg, preprocessed=True)
    assert stats["layers_corrected"] == 1

    def channel_means(path):
        return _predict(path, x).mean(axis=(0, 2, 3))

    reference = channel_means(pre)
    before = np.abs(channel_means(int8) - reference)
    after = np.abs(channel_means(fixed8) - reference)
    scales = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fixed8)).graph.initializer
              if i.name.endswith("_scale") and numpy_helper.to_array(i).ndim == 0}
    # what rounding alone can leave: half an output step, plus half an input step through the sum of |weights|
    # (10 + 8 x 0.035 per channel); the scales are the INT8 model's own
    step_in, step_out = sorted(float(s) for s in scales.values())[:2]
    bound = step_out / 2 + 10.28 * step_in / 2
    assert before.min() > 2 * bound, (before, bound)  # the uncorrected error is beyond rounding: a real test
    assert after.max() <= bound, (after, bound)
