"""torch -> ONNX with a dynamic batch axis, checked against torch before it is called done."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from common.compare import Bars, Comparison, compare
from common.errors import GateFailed

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 18


def export_onnx(model: nn.Module, example: np.ndarray, path: Path) -> None:
    """Export with the dynamo exporter from a batch-2 example (batch 1 would silently fix the batch axis)."""
    model = model.eval()
    x = torch.from_numpy(np.ascontiguousarray(example[:2]))
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp, _quiet():
        program = torch.onnx.export(
            model, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},), opset_version=OPSET, optimize=True, verbose=False,
        )
        program.save(str(tmp))


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warnings that are noise to our users."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def check_parity(model: nn.Module, onnx_path: Path, x: np.ndarray, *, atol: float,
                 batch_sizes: tuple[int, ...] = (1, 4, 64)) -> Comparison:
    """Compare ONNX Runtime with torch on real inputs at several batch sizes (`common.compare`, every row of
    every batch size pooled); raise when max abs diff is beyond `atol`."""
    import onnxruntime as ort

    from compress.training.loop import predict_logits

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = predict_logits(model, x)
    outs, refs = [], []
    for b in batch_sizes:
        chunk = x[: max(b, min(len(x), 4 * b))]
        for i in range(0, len(chunk) - b + 1, b):
            outs.append(session.run(None, {INPUT_NAME: chunk[i : i + b]})[0])
            refs.append(reference[i : i + b])
    parity = compare(np.concatenate(refs), np.concatenate(outs), Bars(atol=atol), batch_sizes=tuple(batch_sizes))
    if not parity.ok:
        raise GateFailed(
            f"ONNX export of {onnx_path.name} differs from torch by {parity.max_abs_diff:.2e} "
            f"(tolerance {atol:.0e}); the export is wrong, not shipped"
        )
    return parity
