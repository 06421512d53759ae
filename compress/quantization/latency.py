"""Latency-aware mixed precision for static INT8: whether INT8 pays is measured on this machine, not assumed.

On the 2-core AMD EPYC (AVX-512 VNNI) boxes, QDQ with int8 activations (S8S8) ran a mobile CNN at 0.8-1.0x of
FP32 while uint8 activations (U8S8) ran it 2.1x faster, and a HardSwish model ran slower in INT8 either way: the
activations onnxruntime cannot quantize run in float between Q/DQ pairs. So, next to the accuracy-driven search,
this module builds a handful of variants of the first candidate within the bar -- the other activation flavour,
and one op-type group at a time kept in float -- times them in one interleaved run against that candidate, and
adds the combination of what paid. Each variant is an ordinary search candidate (accuracy, bar, final timing);
the rows returned say what was timed, what stays in float and why.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

from compress.quantization.static import DEPTHWISE, QDQ_OPS, edges, hardswish_pairs, ort_quantizable_op_types
from compress.quantization.candidates import NOISE, Candidate, latencies

WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# quantizable op types that cost nothing in INT8 (onnxruntime folds their Q/DQ or moves bytes only): never timed
CONV_GROUP_SHARE = 0.2  # MatMul/Gemm share of the weights from which keeping every Conv in float is worth timing
MAX_SANDWICHED = 3  # op types timed one by one among those run in float between Q/DQ (the most frequent first)
FREE = {"Relu", "Clip", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather",
        "GatherElements", "Split", "Pad", "TopK", "CumSum", "ArgMax"}


def op_groups(pre_path: Path, int8_path: Path) -> dict[str, tuple[str, ...]]:
    """The op-type groups worth timing in float, by label, for the graph at `pre_path` quantized as `int8_path`.

    depthwise-conv: Conv with group > 1. conv: every Conv, only when MatMul/Gemm hold at least CONV_GROUP_SHARE of
    the weights (otherwise, as in a CNN with one classifier Gemm, it is about the FP32 model, timed anyway).
    matmul: MatMul and Gemm. elementwise: the other op types onnxruntime
    quantizes (Add, Mul, Sigmoid, pooling, Concat, ...). Then, one by one (labelled by their name in lower case), up
    to MAX_SANDWICHED op types onnxruntime cannot quantize that run in float between a DequantizeLinear and a
    QuantizeLinear in `int8_path` (HardSwish, HardSigmoid, ReduceMean, ...)."""
    import onnx

    graph = onnx.load(str(pre_path), load_external_data=False).graph
    present = {n.op_type for n in graph.node}
    groups: dict[str, tuple[str, ...]] = {}
    if any(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in graph.node):
        groups["depthwise-conv"] = (DEPTHWISE,)
    matmul = tuple(sorted(present & {"MatMul", "Gemm"}))
    if matmul and "Conv" in present and _weight_share(graph, set(matmul)) >= CONV_GROUP_SHARE:
        groups["conv"] = ("Conv",)
    if matmul:
        groups["matmul"] = matmul
    elementwise = tuple(sorted(present & (ort_quantizable_op_types() - WEIGHTED - FREE)))
    if elementwise:
        groups["elementwise"] = elementwise
    sandwiched = sandwiched_op_types(pre_path, int8_path)
    for op in sorted(sandwiched, key=lambda t: (-sandwiched[t], t))[:MAX_SANDWICHED]:
        groups[op.lower()] = (op,)
    return groups


def _weight_share(graph, op_types: set[str]) -> float:
    """Share of the weight elements (initializers feeding Conv/MatMul/Gemm) held by the nodes of `op_types`."""
    import math

    sizes = {init.name: math.prod(init.dims) for init in graph.initializer}
    per_type: Counter = Counter()
    for node in graph.node:
        if node.op_type in WEIGHTED:
            per_type[node.op_type] += sum(sizes.get(i, 0) for i in node.input[1:2])
    total = sum(per_type.values())
    return sum(per_type[t] for t in op_types) / total if total else 0.0


def sandwiched_op_types(pre_path: Path, int8_path: Path) -> dict[str, int]:
    """Op types onnxruntime does not quantize that sit between a DequantizeLinear input and a QuantizeLinear
    consumer (float work with a Q/DQ round trip around it), with how many nodes each; a HardSigmoid that is half
    of a HardSwish split by the pre-pass counts as HardSwish."""
    import onnx

    pre = onnx.load(str(pre_path), load_external_data=False).graph
    hardswish = {pre.node[h].name for h in hardswish_pairs(pre)}
    graph = onnx.load(str(int8_path), load_external_data=False).graph
    producer, consumers = edges(graph)
    skip = ort_quantizable_op_types() | set(QDQ_OPS) | {"Constant", "Shape"}
    found = Counter("HardSwish" if n.name in hardswish else n.op_type for n in graph.node if n.op_type not in skip
                    and any(producer.get(i) == "DequantizeLinear" for i in n.input)
                    and any(c == "QuantizeLinear" for o in n.output for c in consumers.get(o, [])))
    return dict(found)


def latency_candidates(base: Candidate, evaluate: Callable[..., Candidate], pre: Path,
                       make_feeds: Callable[[Any], dict], threads: int) -> list[dict]:
    """Build and time the variants of `base` (the first candidate within the bar); `evaluate` (search_int8's)
    quantizes, judges and records each as a candidate. Returns one row per variant: what it changed, its p50 and
    `base`'s at batch 1 from one interleaved run, whether it paid, and why; plus a row for the combination of all
    that paid, when that is more than one change (timed later, with every candidate, by the search)."""
    flavour = "int8" if base.activation_type == "uint8" else "uint8"
    variants = {f"act-{flavour}": ((), flavour)}
    variants.update({f"float-{g}": (types, base.activation_type)
                     for g, types in op_groups(pre, Path(base.path)).items()})
    built = {name: evaluate(name, base.calibration, base.float_nodes, float_op_types=types, activation=act,
                            changes=base.changes + 1, bias_corrected=base.bias_corrected)
             for name, (types, act) in variants.items()}
    p50 = latencies({"base": Path(base.path), **{n: Path(c.path) for n, c in built.items()}}, make_feeds, 1, threads)
    rows, paid_types, paid_flavour = [], [], base.activation_type
    for name, cand in built.items():
        speedup = p50["base"] / p50[name]  # > 1: the variant is faster than `base`
        paid = cand.meets_bar and p50[name] < p50["base"] * (1 - NOISE)
        rows.append({"variant": name, "float_op_types": list(cand.float_op_types),
                     "activation_type": cand.activation_type, "p50_ms": round(p50[name], 4),
                     "base_p50_ms": round(p50["base"], 4), "meets_bar": cand.meets_bar, "kept": paid,
                     "reason": _reason(cand, base, speedup, paid)})
        if paid and cand.float_op_types:
            paid_types += cand.float_op_types
        elif paid:
            paid_flavour = cand.activation_type
    changes = len([r for r in rows if r["kept"]])
    if changes > 1:
        combo = evaluate("latency-mixed", base.calibration, base.float_nodes, float_op_types=tuple(paid_types),
                         activation=paid_flavour, changes=base.changes + changes,
                         bias_corrected=base.bias_corrected)
        rows.append({"variant": combo.name, "float_op_types": list(combo.float_op_types),
                     "activation_type": combo.activation_type, "p50_ms": None, "base_p50_ms": None,
                     "meets_bar": combo.meets_bar, "kept": combo.meets_bar,
                     "reason": "every change that paid alone, together (timed with the candidates)"})
    return rows


def _reason(cand: Candidate, base: Candidate, speedup: float, paid: bool) -> str:
    if not cand.float_op_types:  # the activation flavour
        other = f"{cand.activation_type} activations"
        if paid:
            return f"{other} {speedup:.2f}x faster than {base.activation_type} here"
        return f"{other} {speedup:.2f}x of {base.activation_type} here: {base.activation_type} kept"
    ops = ", ".join(cand.float_op_types)
    if paid:
        return f"INT8 {speedup:.2f}x slower here for {ops}: kept in float"
    if not cand.meets_bar and speedup > 1:
        return f"{ops} in float {speedup:.2f}x faster but misses the accuracy bar: kept INT8"
    return f"INT8 pays or ties within noise for {ops} ({speedup:.2f}x in float): kept INT8"
