"""FP16 copies of ONNX graphs for GPU targets: every float tensor and weight in float16, inputs and outputs kept in
float32 (Cast nodes at the edges), so an app feeds the FP16 file exactly as it feeds the FP32 one.

The converter is ONNX Runtime's own (`onnxruntime.transformers.float16.convert_float_to_float16`, shipped with the
pinned onnxruntime wheel: no extra dependency), with `keep_io_types=True` and its default block list (ops without
float16 kernels stay in float32). A GPU runs float16 on its tensor cores; on an x86 CPU ONNX Runtime has few
float16 kernels and inserts casts around the others, computing in float32: there the CPU provider checks the graph and
the rounding of weights and activations at the casts, not float16 arithmetic (only a GPU run shows that) or speed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

SUFFIX = "-fp16"  # variant name of the FP16 copy: "baseline-fp16", "<student>-fp16"
# float16 rounds to 11 significant bits (relative step 2**-11 ~ 4.9e-4); over a few conv / matmul layers the error
# grows to a few 1e-3 on logits of order 1 to 10. A conversion that breaks something (an overflow to inf, a NaN,
# a lost op) moves logits by far more than this or flips rows; the budget judges the accuracy itself.
PARITY_ATOL = 1e-2
MIN_AGREEMENT = 0.99  # of the FP32 graph's top-1 on the check rows: below it the copy is not a candidate


def to_fp16(model: Any) -> Any:
    """A float16 copy of `model` (an onnx.ModelProto) with float32 inputs and outputs; `model` is not modified."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return convert_float_to_float16(copy, keep_io_types=True)


def convert_file(src: Path, dst: Path) -> dict[str, Any]:
    """Write the FP16 copy of the ONNX file `src` to `dst` (atomically); returns what was done, for the report."""
    import onnx
    import onnxruntime

    from common.atomic import atomic_path

    model = onnx.load(str(src))
    half = to_fp16(model)
    with atomic_path(Path(dst)) as tmp:
        onnx.save(half, str(tmp))
    return {"source": Path(src).name, "converter": f"onnxruntime.transformers.float16 (onnxruntime "
                                                   f"{onnxruntime.__version__})", "keep_io_types": True,
            "fp16_initializers": count_fp16_initializers(half)}


def count_fp16_initializers(model: Any) -> int:
    """How many weights of `model` are stored as float16 (0 means the conversion did nothing)."""
    from onnx import TensorProto

    return sum(1 for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16)


def parity(fp32: Path, fp16: Path, check, *, providers: list[str] | None = None) -> Any:
    """The FP16 file's outputs against the FP32 file's on the rows `check` (an array, or a tuple of arrays, one per
    input), both on `providers` (default: the CPU): a `common.compare.Comparison` held to MIN_AGREEMENT. The max
    abs difference is recorded, not gated here (it scales with the logits of each model); the tests hold a small
    CNN to PARITY_ATOL."""
    import numpy as np

    from common.compare import Bars, compare
    from runtime import load
    from targets import check_feeds

    outs = []
    for path in (fp32, fp16):
        with load(path, providers=providers or ["CPUExecutionProvider"]) as runner:
            feeds = check_feeds(check, runner.inputs)
            outs.append(np.asarray(runner.first_output(feeds), dtype=np.float32))
    ref, got = (o.reshape(len(o), -1) for o in outs)
    return compare(ref, got, Bars(min_agreement=MIN_AGREEMENT))


def candidates(sources: dict[str, Path], check) -> tuple[dict[str, Path], dict[str, Any]]:
    """FP16 copies of the FP32 ONNX files `sources` (variant name -> path), each written beside its source as
    `<stem>.fp16.onnx` and checked against it on the rows `check` (CPU provider): {name + SUFFIX: path} of those
    within MIN_AGREEMENT, and {name + SUFFIX: conversion and parity} for the report (a miss says why it is out)."""
    paths, info = {}, {}
    for name, src in sources.items():
        dst = Path(src).with_name(Path(src).stem + ".fp16.onnx")
        try:  # a graph the converter or ONNX Runtime cannot take leaves FP32 and INT8 as the candidates
            record = convert_file(Path(src), dst)
            comparison = parity(Path(src), dst, check) if check is not None else None
        except Exception as e:  # noqa: BLE001 - the converter and onnxruntime raise many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            info[name + SUFFIX] = {"not_a_candidate": f"FP16 conversion failed: {type(e).__name__}: {first}"}
            continue
        if comparison is not None:
            record["parity_vs_fp32_cpu"] = comparison.to_dict()
            if not comparison.ok:
                record["not_a_candidate"] = comparison.why
                info[name + SUFFIX] = record
                continue
        paths[name + SUFFIX] = dst
        info[name + SUFFIX] = record
    return paths, info
