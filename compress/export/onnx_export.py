"""torch -> ONNX with dynamic axes, checked against torch before it is called done: one exporter call and one
parity gate for every family (an image model's one input, a text encoder's ids and mask)."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from common.compare import Bars, Comparison, compare
from common.errors import GateFailed

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 18
MAX_BATCH = 4096


def export_graph(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, *, input_names: tuple[str, ...],
                 dynamic_shapes: tuple[dict[int, Any], ...]) -> None:
    """The dynamo exporter, written atomically to `path`, its progress lines and warnings silenced. `example` has
    batch 2 at least: batch 1 would silently fix the batch axis."""
    with atomic_path(path) as tmp, _quiet():
        program = torch.onnx.export(
            model.eval(), example, dynamo=True, input_names=list(input_names), output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes, opset_version=OPSET, optimize=True, verbose=False,
        )
        program.save(str(tmp))


def export_onnx(model: nn.Module, example: np.ndarray, path: Path) -> None:
    """A one-input model (images, model-ready rows) with a dynamic batch axis, from a batch-2 example."""
    x = torch.from_numpy(np.ascontiguousarray(example[:2]))
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    export_graph(model, (x,), path, input_names=(INPUT_NAME,), dynamic_shapes=({0: batch},))


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warnings that are noise to our users."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def parity_gate(onnx_path: Path, pairs: Iterable[tuple[np.ndarray, np.ndarray]], *, atol: float,
                **context: Any) -> Comparison:
    """torch (each pair's first) against ONNX Runtime (its second), every row pooled (`common.compare`); raise when
    max abs diff is beyond `atol` times the largest logit (at least 1: float32 rounding grows with the values
    summed), or when a shape differs (an axis was fixed at export). `context` (batch sizes, sequence lengths) is
    recorded with the comparison."""
    refs, outs = [], []
    for ref, out in pairs:
        if out.shape != ref.shape:
            raise GateFailed(f"ONNX output shape {out.shape} != torch {ref.shape} ({context}): an axis was fixed at "
                             "export")
        refs.append(ref)
        outs.append(out)
    if not refs:
        raise GateFailed(f"no rows to check the ONNX export of {Path(onnx_path).name} on")
    reference = np.concatenate(refs)
    scale = max(1.0, float(np.abs(reference).max()))
    parity = compare(reference, np.concatenate(outs), Bars(atol=atol * scale), **context)
    if not parity.ok:
        raise GateFailed(f"ONNX export of {Path(onnx_path).name} differs from torch by {parity.max_abs_diff:.2e} "
                         f"(tolerance {atol * scale:.1e}: {atol:.0e} x the largest logit); the export is wrong, "
                         "not shipped")
    return parity


def check_parity(model: nn.Module, onnx_path: Path, x: np.ndarray, *, atol: float,
                 batch_sizes: tuple[int, ...] = (1, 4, 64)) -> Comparison:
    """ONNX Runtime against torch on real inputs at several batch sizes (each as many rows as there are, up to
    four batches); raise when max abs diff is beyond `atol`."""
    import onnxruntime as ort

    from compress.training.loop import predict_logits

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = predict_logits(model, x)
    run: Callable[[np.ndarray], np.ndarray] = lambda rows: session.run(None, {INPUT_NAME: rows})[0]  # noqa: E731

    def pairs():
        for b in batch_sizes:
            chunk = x[: max(b, min(len(x), 4 * b))]
            for i in range(0, len(chunk) - b + 1, b):
                yield reference[i : i + b], run(chunk[i : i + b])

    return parity_gate(Path(onnx_path), pairs(), atol=atol, batch_sizes=tuple(batch_sizes))
