"""Static INT8 (QDQ) through onnxruntime.quantization, calibrated on training samples."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from compress.recipe import QuantConfig

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a numpy array."""

    def __init__(self, input_name: str, samples: np.ndarray, batch_size: int = 32) -> None:
        self._batches = iter([{input_name: samples[i : i + batch_size]} for i in range(0, len(samples), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # not used by the calibrators, but part of the protocol
        pass


def preprocess_for_quantization(fp32_path: Path, out_path: Path) -> None:
    """onnxruntime's recommended pre-pass (shape inference, graph clean-up) before calibration."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)


def quantizable_nodes(onnx_path: Path) -> list[tuple[str, str]]:
    """(name, op type) of the nodes that carry weights worth quantizing."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]


def quantize_static_qdq(fp32_path: Path, out_path: Path, calib: np.ndarray, cfg: QuantConfig, *,
                        input_name: str = "input", exclude_nodes: tuple[str, ...] = (),
                        only_nodes: tuple[str, ...] = (), preprocessed: bool = False) -> None:
    """Write a QDQ INT8 copy of `fp32_path` to `out_path`; the input file is not modified."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not np.isfinite(calib).all():
        from common.errors import CompressError

        raise CompressError("calibration data holds NaN or Inf; clean the data set before quantizing")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibration]
    activation = QuantType.QUInt8 if cfg.activation_type == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre = fp32_path
        if not preprocessed:
            pre = Path(tmp) / "pre.onnx"
            preprocess_for_quantization(fp32_path, pre)
        with atomic_path(out_path) as target:
            quantize_static(
                str(pre), str(target), _Reader(input_name, calib),
                quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
                activation_type=activation, weight_type=QuantType.QInt8,
                calibrate_method=method, nodes_to_exclude=list(exclude_nodes),
                nodes_to_quantize=list(only_nodes) or None,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )


@contextlib.contextmanager
def _quiet():
    logging.getLogger().setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def op_precision(onnx_path: Path) -> dict[str, dict[str, int]]:
    """Which compute ops sit between DequantizeLinear inputs and QuantizeLinear outputs (INT8) and which stay float."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    initializers = {init.name for init in graph.initializer}
    int8, floating = Counter(), Counter()
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            continue
        activations = [i for i in node.input if i and i not in initializers and producer.get(i) != "Constant"]
        inputs_q = bool(activations) and all(producer.get(i) == "DequantizeLinear" for i in activations)
        outputs_q = all(all(c == "QuantizeLinear" for c in consumers.get(o, ["<graph output>"])) for o in node.output)
        (int8 if inputs_q and (outputs_q or node.op_type in ("MatMul", "Gemm", "Conv")) else floating)[node.op_type] += 1
    counts = Counter(n.op_type for n in graph.node if n.op_type in QDQ_OPS)
    return {"int8": dict(int8), "float": dict(floating), "qdq_nodes": dict(counts)}
