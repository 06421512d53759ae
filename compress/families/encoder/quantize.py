"""Dynamic INT8 for an exported text encoder behind an accuracy gate: ONNX Runtime's `quantize_dynamic` over
every MatMul or only the weight ones, the gated search over scope and per-channel candidates that picks the fastest
one within the accuracy budget (a collapsed model, onnxruntime issue 9599, misses it by its accuracy), and the op
counts and validation agreement the report records. Torch-free at import time.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.compare import top1_agreement
from common.errors import CompressError
from compress.driver import log

INT8_SCOPES = ("all", "weights")
DYNAMIC_CANDIDATES = (("all", False), ("all", True), ("weights", False), ("weights", True))


# -- dynamic INT8 ------------------------------------------------------------------------------------------

def weight_nodes(graph) -> list[str]:
    """MatMul / Gemm / fused Attention nodes of an onnx graph with a constant weight, and Gather nodes reading a
    float table."""
    import onnx

    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    names = []
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm", "Attention") and any(i in floats for i in node.input[1:2]):
            names.append(node.name)
        elif node.op_type == "Gather" and node.input[0] in floats:
            names.append(node.name)
    return names


def quantize_dynamic_int8(fp32_path: Path, out_path: Path, *, per_channel: bool = False,
                          scope: str = "all") -> None:
    """ONNX Runtime's dynamic INT8 (weights QInt8, activations quantized per call); input file untouched.

    scope 'all' is ORT's default (every MatMul, activation x activation ones included, and Gather);
    'weights' quantizes only MatMul/Gemm with a constant weight and the embedding Gathers.
    """
    import contextlib
    import io
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from common.atomic import atomic_path

    if scope not in INT8_SCOPES:
        raise CompressError(f"INT8 scope {scope!r} unknown; known: {', '.join(INT8_SCOPES)}")
    import onnx

    model = onnx.load(str(fp32_path))
    nodes = weight_nodes(model.graph) if scope == "weights" else None
    # the exporter's intermediate shape annotations can disagree with onnx's re-inference (seen: a [hidden]
    # slice of the token-type table annotated with the table's row count), which stops the quantizer; the
    # quantizer re-infers them anyway
    del model.graph.value_info[:]
    logging.getLogger().setLevel(logging.ERROR)
    with atomic_path(out_path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        # a fused graph's com.microsoft operators have no onnx shape inference: their outputs are float
        quantize_dynamic(model, str(tmp), per_channel=per_channel, weight_type=QuantType.QInt8,
                         nodes_to_quantize=nodes, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


# -- the gated search ----------------------------------------------------------------------------------------

def val_agreement(fp32: Path, int8: Path, split, threads: int) -> float:
    from bench.accuracy import predict_split
    from runtime import load

    with load(fp32, threads=threads) as a, load(int8, threads=threads) as b:
        return top1_agreement(predict_split(a, split), predict_split(b, split))


def op_counts(path: Path) -> dict[str, Any]:
    """How many ops run in INT8 and how many MatMul/Gemm stay in float (why INT8 is or is not faster)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    int8 = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "ConvInteger", "DynamicQuantizeMatMul",
            "QAttention"}
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"int8": sum(v for k, v in ops.items() if k in int8),
            "float": ops.get("MatMul", 0) + ops.get("Gemm", 0) + ops.get("Attention", 0),
            "by_type": dict(sorted(ops.items()))}


def search_dynamic_int8(fp32_path: Path, out_path: Path, data, q, workdir: Path, *, threads: int = 2):
    """Dynamic INT8 candidates (every MatMul vs weight MatMuls only; per-tensor vs per-channel weights), each
    measured on the validation texts and timed at batch 1 and full sequence length; the fastest within
    `q.max_accuracy_drop` of FP32 ships. A candidate that collapsed (onnxruntime issue 9599: predictions drift
    to one class) misses the bar by its accuracy. None within the bar: the most accurate is saved, the table
    printed, and SearchFailed raised.

    `data` is anything with `val` and `test` (`bench.data.tokens.EncodedSplit`) and `max_length`, such as
    `compress.families.encoder.family.TextData`.
    """
    from bench.accuracy import latency_feeds, predict_split
    from compress.quantization.candidates import (Candidate, SearchFailed, SearchResult, choose, copy_model,
                                                 format_table, latencies)
    from compress.families.encoder.training import accuracy_of
    from runtime import load

    def val_logits(path: Path) -> np.ndarray:
        with load(path, threads=threads) as runner:
            return predict_split(runner, data.val)

    reference = val_logits(fp32_path)
    fp32_acc = accuracy_of(reference, data.val.y)
    scopes = DYNAMIC_CANDIDATES if q.search else (("all", q.per_channel),)
    candidates, paths = [], {}
    for scope, per_channel in scopes:
        name = f"dynamic-{scope}" + ("-pc" if per_channel else "")
        paths[name] = workdir / f"{name}.onnx"
        quantize_dynamic_int8(fp32_path, paths[name], scope=scope, per_channel=per_channel)
        logits = val_logits(paths[name])
        acc = accuracy_of(logits, data.val.y)
        drop = 100.0 * (fp32_acc - acc)
        candidates.append(Candidate(name, "dynamic", (), str(paths[name]), acc, round(drop, 4),
                                    top1_agreement(reference, logits),
                                    meets_bar=drop <= q.max_accuracy_drop + 1e-9))
        log(f"  {name}: val {acc:.4f} (FP32 {fp32_acc:.4f}), agreement {candidates[-1].agreement:.4f}")
    feeds = latency_feeds(data.test, 1, "input_ids", data.max_length)
    p50 = latencies(paths, lambda runner: feeds, 1, threads)
    candidates = [dataclasses.replace(c, p50_ms=round(p50[c.name], 4)) for c in candidates]
    chosen = choose(candidates)
    copy_model(Path(chosen.path), out_path)
    result = SearchResult(chosen, tuple(candidates), (), fp32_acc)
    if not chosen.meets_bar:
        print(format_table(result), file=sys.stderr)
        raise SearchFailed(result,
            f"no dynamic INT8 candidate stayed within quantize.max_accuracy_drop={q.max_accuracy_drop} pt of FP32 "
            f"({fp32_acc:.4f} on validation); the most accurate ({chosen.name}, drop {chosen.accuracy_drop_pt:.2f} "
            f"pt) is saved as {out_path}")
    return result
