"""Empirical bias correction (Nagel et al., "Data-Free Quantization", 2019; AIMET's bias correction): rounding
the weights to INT8 shifts the mean of every output channel by E[conv(x, W_int8 - W)], which on depthwise and
first layers (few weights per channel, inputs that are all positive after ReLU6) adds up to a systematic error that
per-channel scales do not remove. Each Conv / Gemm bias is moved by minus that shift, measured with the inputs the
INT8 model itself sees on the calibration rows, so the INT8 model's channel means match FP32's again.

Only the layer's own weight error is corrected (each layer is measured on its quantized input, its upstream errors
included, but only its own ΔW is compensated): correcting every layer's whole output shift at once would count an
upstream error twice and diverges."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_path

BATCH = 16


def correct_biases(fp32_path: Path, int8_path: Path, out_path: Path, calib: np.ndarray) -> dict:
    """Write `fp32_path` with its Conv / Gemm biases corrected for the weight rounding of `int8_path` (a QDQ copy
    of the same graph) to `out_path`; quantizing that file again gives the bias-corrected INT8 model. Returns the
    number of layers corrected and the largest shift removed relative to the layer's bias scale."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    weights = {init.name: init for init in model.graph.initializer}
    int8 = onnx.load(str(int8_path))
    rounded = dequantized_weights(int8)
    int8_nodes = {n.name: n for n in int8.graph.node}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.name in int8_nodes
              and n.input[1] in rounded and (n.op_type, rounded[n.input[1]].ndim) in (("Conv", 4), ("Gemm", 2))]
    inputs = [int8_nodes[n.name].input[0] for n in layers]
    deltas = {n.name: rounded[n.input[1]] - numpy_helper.to_array(weights[n.input[1]]) for n in layers}
    sums = {n.name: 0.0 for n in layers}
    for batch in _captured(int8, inputs, calib):
        for node, name in zip(layers, inputs):
            sums[node.name] = sums[node.name] + output_shift(node, batch[name], deltas[node.name]) * len(batch[name])
    largest = 0.0
    for node in layers:
        shift = (sums[node.name] / len(calib)).astype(np.float32)
        bias = _bias(model, node, weights, len(shift))
        largest = max(largest, float(np.abs(shift).max() / (np.abs(bias).max() + 1e-12)))
        weights[node.input[2]].CopyFrom(numpy_helper.from_array(bias - shift, node.input[2]))
    with atomic_path(out_path) as target:
        onnx.save(model, str(target))
    return {"layers_corrected": len(layers), "largest_relative_shift": round(largest, 4)}


def output_shift(node, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Mean over the batch and every output position of `node` applied to `x` with weights `delta` and no bias,
    per output channel (2-D Conv or Gemm), without running the convolution: the mean input under each kernel tap
    times the tap."""
    attrs = _attributes(node)
    if node.op_type == "Gemm":
        mean_x = x.mean(1) if attrs.get("transA", 0) else x.mean(0)
        return delta @ mean_x if attrs.get("transB", 0) else mean_x @ delta
    kernel = delta.shape[2:]
    groups = attrs.get("group", 1)
    taps = tap_means(x, kernel, attrs)  # [Cin, KH, KW]
    c_out, c_in = delta.shape[0], delta.shape[1]
    return np.einsum("goikl,gikl->go", delta.reshape(groups, c_out // groups, c_in, *kernel),
                     taps.reshape(groups, c_in, *kernel)).reshape(c_out)


def tap_means(x: np.ndarray, kernel: tuple[int, int], attrs: dict) -> np.ndarray:
    """[C, KH, KW]: the mean of the (zero-padded) input seen by each kernel tap over every output position."""
    pads = attrs.get("pads", [0, 0, 0, 0])
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        pads = _same_pads(x.shape[2:], kernel, attrs)
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (xp.shape[2] - dh * (kernel[0] - 1) - 1) // sh + 1
    out_w = (xp.shape[3] - dw * (kernel[1] - 1) - 1) // sw + 1
    taps = np.empty((x.shape[1], *kernel), dtype=np.float64)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            window = xp[:, :, i * dh: i * dh + sh * (out_h - 1) + 1: sh, j * dw: j * dw + sw * (out_w - 1) + 1: sw]
            taps[:, i, j] = window.mean(axis=(0, 2, 3), dtype=np.float64)
    return taps


def dequantized_weights(int8_model) -> dict[str, np.ndarray]:
    """Float weight name -> the values the QDQ model computes with (its DequantizeLinear of the INT8 weight)."""
    from onnx import numpy_helper

    inits = {init.name: init for init in int8_model.graph.initializer}
    out = {}
    for node in int8_model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or not node.input[0].endswith("_quantized"):
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype not in (np.int8, np.uint8) or node.input[0].endswith("_bias_quantized"):
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2 else 0.0
        axis = _attributes(node).get("axis", 1)
        shape = [1] * q.ndim
        if np.ndim(scale):
            shape[axis] = -1
        out[node.input[0][: -len("_quantized")]] = (q.astype(np.float32) - np.reshape(zero, shape)) * np.reshape(
            scale, shape)
    return out


def _captured(model, names: list[str], x: np.ndarray):
    """Batches of the named tensors of `model` (an onnx.ModelProto) on rows `x`."""
    import copy

    import onnx
    import onnxruntime as ort

    probe = copy.deepcopy(model)
    have = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    from runtime.onnx_backend import disabled_optimizers

    cpu = ["CPUExecutionProvider"]
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=cpu,
                                   disabled_optimizers=disabled_optimizers(cpu))
    feed = session.get_inputs()[0].name
    wanted = list(dict.fromkeys(names))
    for start in range(0, len(x), BATCH):
        yield dict(zip(wanted, session.run(wanted, {feed: x[start: start + BATCH]})))


def _bias(model, node, weights: dict, channels: int) -> np.ndarray:
    """The node's bias as float32, a zero bias initializer added first when it has none."""
    from onnx import numpy_helper

    if len(node.input) < 3 or not node.input[2]:
        name = f"{node.name}_corrected_bias"
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(channels, np.float32), name))
        weights[name] = model.graph.initializer[-1]
        if len(node.input) < 3:
            node.input.append(name)
        else:
            node.input[2] = name
    return numpy_helper.to_array(weights[node.input[2]]).astype(np.float32)


def _same_pads(spatial, kernel, attrs) -> list[int]:
    strides = attrs.get("strides", [1, 1])
    dilations = attrs.get("dilations", [1, 1])
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        lower = total // 2 if attrs.get("auto_pad") in (b"SAME_UPPER", "SAME_UPPER") else total - total // 2
        begin.append(lower)
        end.append(total - lower)
    return begin + end


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
