"""ONNX Runtime's transformer optimizer on an exported encoder: attention and BiasGelu fused.

The fused `Attention` (and `QAttention` after dynamic INT8) runs the Q/K/V projections as one MatMul and the
attention in one kernel, which takes the per-layer operator overhead that dominates a small student on CPU.
Residual adds stay Add + LayerNormalization: ONNX Runtime's CPU SkipLayerNormalization kernel is several times
slower than the two ops it replaces (`tools/skip_layernorm.py`; `runtime/` keeps ORT from re-fusing them on CPU).
The graph then holds com.microsoft operators: ONNX Runtime runs it, TensorRT and LiteRT do not.
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
from pathlib import Path

import numpy as np

FUSED_TYPES = ("Attention", "SkipLayerNormalization", "BiasGelu", "LayerNormalization")


def split_unsqueezes(model) -> int:
    """Rewrite each Unsqueeze over several axes into a chain of single-axis ones; returns how many were split.

    The dynamo exporter folds the mask's two unsqueezes ([batch, seq] -> [batch, 1, 1, seq]) into one, and
    the optimizer's attention pattern expects the two-step form that the TorchScript exporter writes.
    Only ascending non-negative axes are split (then applying them one by one gives the same shape).
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, split = [], 0
    for node in model.graph.node:
        axes = numpy_helper.to_array(inits[node.input[1]]).tolist() if (
            node.op_type == "Unsqueeze" and len(node.input) == 2 and node.input[1] in inits) else []
        if len(axes) < 2 or axes != sorted(axes) or axes[0] < 0:
            nodes.append(node)
            continue
        current = node.input[0]
        for k, axis in enumerate(axes):
            axis_name = f"{node.output[0]}_axis{k}"  # output names are unique in a graph, node names need not be
            model.graph.initializer.append(numpy_helper.from_array(
                np.array([axis], dtype=np.int64), axis_name))
            out = node.output[0] if k == len(axes) - 1 else f"{node.output[0]}_step{k}"
            nodes.append(helper.make_node("Unsqueeze", [current, axis_name], [out],
                                          name=f"{node.output[0]}_unsqueeze{k}"))
            current = out
        split += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split


def fuse_encoder(src: Path, dst: Path) -> dict[str, int]:
    """Fused copy of an exported encoder at `dst` (atomic); returns the count of each fused operator type.

    Heads and widths are read per layer from the graph's reshape shapes, so pruned students with any head
    count fuse too. A pattern the optimizer does not recognise is left unfused, never wrong: the caller checks
    the result against torch.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from common.atomic import atomic_path

    model = onnx.load(str(src))
    split_unsqueezes(model)
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))  # its modules log unmatched patterns under their own names
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            optimized = optimize_model(model, model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                                       optimization_options=options)
    finally:
        logging.disable(previous)
    with atomic_path(dst) as tmp:
        optimized.save_model_to_file(str(tmp))  # also declares the com.microsoft opset the fused nodes use
    counts = collections.Counter(n.op_type for n in optimized.model.graph.node)
    return {t: counts.get(t, 0) for t in FUSED_TYPES}
