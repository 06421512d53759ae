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


def even_batch(rows: int, largest: int) -> int:
    """The largest batch size up to `largest` that divides `rows`: ONNX Runtime's entropy and percentile calibrators
    stack every batch's activations into one array and fail on a shorter last batch."""
    return next(b for b in range(min(largest, max(rows, 1)), 0, -1) if rows % b == 0)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a numpy array."""

    def __init__(self, input_name: str, samples: np.ndarray, batch_size: int = 32) -> None:
        size = even_batch(len(samples), batch_size)
        self._batches = iter([{input_name: samples[i : i + size]} for i in range(0, len(samples), size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # not used by the calibrators, but part of the protocol
        pass


def preprocess_for_quantization(fp32_path: Path, out_path: Path) -> None:
    """onnxruntime's recommended pre-pass (shape inference, graph clean-up) before calibration. The nodes it adds
    unnamed (it splits HardSwish into x * HardSigmoid(x)) are named, so that they can be kept in float by name."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path), load_external_data=False)
    unnamed = [n for n in model.graph.node if not n.name]
    if unnamed and not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        taken = {n.name for n in model.graph.node}
        for i, node in enumerate(unnamed):
            node.name = next(f"{node.op_type}_pre_{i}{'_' * k}" for k in range(len(taken) + 1)
                             if f"{node.op_type}_pre_{i}{'_' * k}" not in taken)
        onnx.save(model, str(out_path))


def quantizable_nodes(onnx_path: Path) -> list[tuple[str, str]]:
    """(name, op type) of the nodes that carry weights worth quantizing."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]


def quantize_static_qdq(fp32_path: Path, out_path: Path, calib: np.ndarray, cfg: QuantConfig, *,
                        input_name: str | None = None, exclude_nodes: tuple[str, ...] = (),
                        only_nodes: tuple[str, ...] = (), preprocessed: bool = False,
                        float_op_types: tuple[str, ...] = (), ranges_cache: Path | None = None) -> None:
    """Write a QDQ INT8 copy of `fp32_path` to `out_path`; the input file is not modified.

    `input_name`: the input the calibration samples feed; by default the model's one input, read from the graph.
    `float_op_types`: op types kept in float (see `float_op_settings`), on top of the nodes in `exclude_nodes`.
    `ranges_cache`: a folder where the calibrated activation ranges are kept, one file per graph, calibration rows,
    method and quantized op types; a call that finds them skips calibration (the ranges are the FP32 model's, whatever
    is kept in float), so a search that quantizes one graph many ways calibrates it once.
    """
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
        op_types, float_nodes = float_op_settings(pre, float_op_types)
        cache = ranges_cache and ranges_cache / f"{_ranges_key(pre, calib, cfg.calibration, op_types)}.json"
        with atomic_path(out_path) as target:
            quantize_static(
                str(pre), str(target), _Reader(input_name or model_input_name(pre), calib),
                quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
                activation_type=activation, weight_type=QuantType.QInt8,
                calibrate_method=method, nodes_to_exclude=sorted(set(exclude_nodes) | set(float_nodes)),
                nodes_to_quantize=list(only_nodes) or None, op_types_to_quantize=op_types,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                calibration_cache_path=cache,
            )


def _ranges_key(graph: Path, calib: np.ndarray, method: str, op_types: list[str] | None) -> str:
    import hashlib

    digest = hashlib.sha256(Path(graph).read_bytes())
    digest.update(np.ascontiguousarray(calib).tobytes())
    digest.update(repr((calib.shape, str(calib.dtype), method, op_types)).encode())
    return digest.hexdigest()[:32]


def model_input_name(onnx_path: Path) -> str:
    """The name of the model's one graph input (not an initializer); calibration feeds it."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    names = [i.name for i in graph.input if i.name not in weights]
    if len(names) != 1:
        from common.errors import CompressError

        raise CompressError(f"static INT8 calibrates a model with one input; {Path(onnx_path).name} has "
                            f"{len(names)}: {names}. Pass input_name= for the one the calibration samples feed")
    return names[0]


DEPTHWISE = "DepthwiseConv"  # a pseudo op type: Conv nodes with group > 1


def ort_quantizable_op_types() -> set[str]:
    """The op types onnxruntime's quantize_static quantizes by default (its QLinear and QDQ registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QLinearOpsRegistry) | set(QDQRegistry)


def float_op_settings(onnx_path: Path, float_op_types: tuple[str, ...]) -> tuple[list[str] | None, list[str]]:
    """(op_types_to_quantize, nodes to exclude) for quantize_static that keep `float_op_types` in float.

    An op type onnxruntime quantizes (Conv, MatMul, Add, Mul, Sigmoid, ...) is left out of `op_types_to_quantize`:
    it runs in float, with Q/DQ only where it meets a quantized neighbour. `DepthwiseConv` names the Conv nodes
    with group > 1. An op type onnxruntime never quantizes (HardSwish, HardSigmoid, ReduceMean, Gelu, ...) still
    runs between the Q/DQ pairs its quantized neighbours put around it; keeping it in float keeps every node that
    touches its input and output tensors in float too, so that no Q/DQ sits on its edges. A HardSwish that the
    pre-pass split into x * HardSigmoid(x) counts as one HardSwish."""
    if not float_op_types:
        return None, []
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    wanted, quantizable = set(float_op_types), ort_quantizable_op_types()
    nodes = [n.name for n in graph.node if wanted & {DEPTHWISE} and n.op_type == "Conv" and _group(n) > 1]
    weights = {init.name for init in graph.initializer}
    for unit in op_units(graph, wanted - quantizable - {DEPTHWISE}):
        inside = {o for n in unit for o in n.output}
        edges = {i for n in unit for i in n.input if i and i not in weights and i not in inside} | inside
        nodes += [n.name for n in graph.node if edges & (set(n.input) | set(n.output))]
    return sorted(quantizable - wanted), sorted({n for n in nodes if n})


def op_units(graph, op_types: set[str]) -> list[list]:
    """The nodes of each op of `op_types` in `graph`: one node each, or HardSigmoid + Mul for a HardSwish that
    onnxruntime's pre-pass split into x * HardSigmoid(x)."""
    nodes = list(graph.node)
    pairs = hardswish_pairs(graph)
    paired = set(pairs) | set(pairs.values())
    units = [[nodes[h], nodes[m]] for h, m in pairs.items()] if "HardSwish" in op_types else []
    return units + [[n] for i, n in enumerate(nodes) if n.op_type in op_types and i not in paired]


def hardswish_pairs(graph) -> dict[int, int]:
    """Index of each HardSigmoid node -> index of the Mul that multiplies its input by it (x * HardSigmoid(x))."""
    nodes = list(graph.node)
    by_input: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            by_input.setdefault(name, []).append(i)
    return {h: m for h, node in enumerate(nodes) if node.op_type == "HardSigmoid"
            for m in by_input.get(node.output[0], [])
            if nodes[m].op_type == "Mul" and set(nodes[m].input) == {node.input[0], node.output[0]}}


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


@contextlib.contextmanager
def _quiet():
    logging.getLogger().setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def edges(graph) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(tensor -> the op type producing it, tensor -> the op types consuming it) of an ONNX graph."""
    producer = {out: node.op_type for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    return producer, consumers


def op_precision(onnx_path: Path) -> dict[str, dict[str, int]]:
    """Which compute ops sit between DequantizeLinear inputs and QuantizeLinear outputs (INT8) and which stay float."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer, consumers = edges(graph)
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
