"""Small real models for the runtime tests, built without torch: ONNX graphs with onnx.helper, a linear
Fashion-MNIST classifier fitted with numpy, and a TFLite flatbuffer written with LiteRT's schema module.

(No tests here; the name only keeps it inside the runtime test files.)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PREPROCESS = {"scale": 1 / 255, "mean": 0.286, "std": 0.353, "layout": "NCHW"}


def save_onnx(model, path: Path, metadata: dict | None = None) -> Path:
    import onnx

    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    if metadata is not None:
        Path(str(path) + ".meta.json").write_text(json.dumps(metadata))
    return path


def small_cnn(path: Path, seed: int = 0, metadata: dict | None = None) -> Path:
    """input float32[batch, 1, 28, 28] -> Conv(4, 3x3) -> Relu -> MaxPool 2 -> Flatten -> Gemm -> logits[batch, 10]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32), "conv_w")
    b = numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "conv_b")
    fw = numpy_helper.from_array((rng.standard_normal((4 * 14 * 14, 10)) * 0.05).astype(np.float32), "fc_w")
    fb = numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [w, b, fw, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="runtime-tests")
    model.ir_version = 8
    return save_onnx(model, path, metadata)


def two_input_model(path: Path) -> Path:
    """ids int64[batch, 8] and mask float32[batch, 8] -> out float32[batch, 8] = Cast(ids) * mask."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["idf", "mask"], ["out"])]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_onnx(model, path)


def fit_linear_classifier(images: np.ndarray, labels: np.ndarray, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression onto one-hot targets on preprocessed pixels: a real (if simple) trained classifier."""
    x = images.reshape(len(images), -1).astype(np.float32) * PREPROCESS["scale"]
    x = (x - PREPROCESS["mean"]) / PREPROCESS["std"]
    x1 = np.hstack([x, np.ones((len(x), 1), np.float32)])
    y = np.eye(classes, dtype=np.float32)[labels]
    a = x1.T @ x1 + 10.0 * np.eye(x1.shape[1], dtype=np.float32)
    wb = np.linalg.solve(a, x1.T @ y).astype(np.float32)
    return wb[:-1], wb[-1]


def linear_classifier(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """input float32[batch, 1, 28, 28] -> Flatten -> Gemm -> logits, with the Fashion-MNIST sidecar."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_onnx(model, path, {"labels": list(LABELS), "preprocess": PREPROCESS})


def tflite_dense(path: Path, weight: np.ndarray, bias: np.ndarray, *, dynamic_batch: bool = True) -> Path:
    """A one-op TFLite model: input float32[batch, K] -> FULLY_CONNECTED -> output float32[batch, N].

    Written with the flatbuffer schema module that ships in ai-edge-litert, so no converter is needed.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    n, k = weight.shape
    model = s.ModelT()
    model.version = 3
    model.description = "runtime-tests dense"
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    model.operatorCodes = [code]
    buffers = [s.BufferT()]  # buffer 0 is the empty sentinel

    def tensor(name, shape, buffer=0, signature=None):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.FLOAT32, buffer
        if signature is not None:
            t.shapeSignature = list(signature)
        return t

    for arr in (weight, bias):
        buf = s.BufferT()
        buf.data = list(np.ascontiguousarray(arr, np.float32).tobytes())
        buffers.append(buf)
    model.buffers = buffers
    sig_in = [-1, k] if dynamic_batch else None
    sig_out = [-1, n] if dynamic_batch else None
    sub = s.SubGraphT()
    sub.tensors = [tensor("input", [1, k], signature=sig_in), tensor("weight", [n, k], 1), tensor("bias", [n], 2),
                   tensor("output", [1, n], signature=sig_out)]
    sub.inputs, sub.outputs = [0], [3]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    sub.operators = [op]
    sub.name = "main"
    model.subgraphs = [sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = Path(path)
    path.write_bytes(bytes(builder.Output()))
    return path
