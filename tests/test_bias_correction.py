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


def _depthwise_then_pointwise() -> nn.Module:
    """Per-channel weight ranges 1000x apart in the depthwise layer: per-tensor INT8 rounds the small channels to 0."""
    dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    with torch.no_grad():
        scale = torch.tensor([100.0, 1.0, 0.1, 0.1]).reshape(4, 1, 1, 1)
        dw.weight.copy_(torch.linspace(0.5, 1.0, 36).reshape(4, 1, 3, 3) * scale)
    pw = nn.Conv2d(4, 3, 1)
    with torch.no_grad():  # the output reads the small channels
        pw.weight.copy_(torch.tensor([[0.001, 1.0, 10.0, 10.0], [0.0, 2.0, -10.0, 10.0], [0.0, 1.0, 10.0, -10.0]])
                        .reshape(3, 4, 1, 1))
    stem = nn.Conv2d(4, 4, 1)  # quantized, so that the depthwise layer reads a DequantizeLinear
    with torch.no_grad():
        stem.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
        stem.bias.zero_()
    return nn.Sequential(stem, nn.ReLU6(), dw, pw).eval()


def test_a_layer_kept_in_float_runs_in_float(tmp_path):
    """ONNX Runtime's WeightBiasQuantization pass would round a float Conv fed by DequantizeLinear to per-tensor INT8
    at load time; every session of the project skips it, so the runtime computes what the QDQ graph says (reference:
    the same file with every graph optimization off), within two steps of the output's INT8 scale."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from compress.quantization.search import _predict
    from compress.quantization.static import preprocess_for_quantization, quantize_static_qdq
    from compress.recipe import QuantConfig

    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 6.0, (32, 4, 10, 10)).astype(np.float32)
    fp32, pre, int8 = (tmp_path / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
    torch.onnx.export(_depthwise_then_pointwise(), torch.from_numpy(x[:1]), str(fp32), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    preprocess_for_quantization(fp32, pre)
    dw = next(n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"
              and any(a.name == "group" and a.i > 1 for a in n.attribute))
    quantize_static_qdq(pre, int8, x, QuantConfig(), preprocessed=True, exclude_nodes=(dw,))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    model = onnx.load(str(int8))
    out_scale = next(float(numpy_helper.to_array(i)) for n in model.graph.node if n.op_type == "DequantizeLinear"
                     and n.output[0] == "y" for i in model.graph.initializer if i.name == n.input[1])
    plain = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(plain - reference).max() > 10 * out_scale  # the pass does what this test guards against
    assert np.abs(_predict(int8, x) - reference).max() <= 2 * out_scale


def test_a_candidate_with_float_layers_gets_its_own_correction(tmp_path):
    """A bias corrected for INT8 weights is wrong on a layer that stays float: such a candidate's graph corrects only
    the layers it quantizes (the float depthwise layer keeps its FP32 bias exactly)."""
    import onnx
    from onnx import numpy_helper

    from compress.quantization.search import _graph_for, corrected_path
    from compress.quantization.static import preprocess_for_quantization
    from compress.recipe import QuantConfig

    x = np.random.default_rng(4).uniform(0.0, 6.0, (32, 4, 10, 10)).astype(np.float32)
    fp32, pre = tmp_path / "fp32.onnx", tmp_path / "pre.onnx"
    torch.onnx.export(_depthwise_then_pointwise(), torch.from_numpy(x[:1]), str(fp32), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    preprocess_for_quantization(fp32, pre)
    convs = [n for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    dw = next(n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute))

    def biases(path):
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
        return {n.name: inits[n.input[2]] for n in convs}

    assert _graph_for(pre, tmp_path, "plain", x, QuantConfig(), (), (), False) == pre
    assert _graph_for(pre, tmp_path, "bc", x, QuantConfig(), (), (), True) == corrected_path(tmp_path)
    own = _graph_for(pre, tmp_path, "fallback-1", x, QuantConfig(), (dw.name,), (), True)
    before, after = biases(pre), biases(own)
    np.testing.assert_array_equal(after[dw.name], before[dw.name])
    assert any(not np.array_equal(after[n.name], before[n.name]) for n in convs if n is not dw)
