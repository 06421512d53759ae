"""Getting a BERT-style encoder classifier onto ONNX Runtime: dynamo ONNX export with dynamic batch and
sequence axes, a CPU ONNX Runtime session, batched ONNX logits, the torch-vs-ONNX parity gate over several
batch sizes and sequence lengths, and the file size helper the reports use.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.text_data import EncodedSplit, at_length, logits_by_length
from common.compare import Bars, Comparison, compare
from common.errors import GateFailed
from models.transformer import EncoderClassifier

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
OPSET = 18


# -- ONNX --------------------------------------------------------------------------------------------------

def export_text_onnx(model: EncoderClassifier, path: Path, *, example_length: int = 16) -> None:
    """Dynamo export with dynamic batch and sequence axes, from a batch-2 example (batch 1 fixes the axis)."""
    from common.atomic import atomic_path
    from compress.export.onnx_export import _quiet

    model = model.eval()
    ids = torch.full((2, example_length), 5, dtype=torch.long)  # any in-range id: only shapes are traced
    mask = torch.ones_like(ids)
    mask[1, example_length // 2 :] = 0
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=model.config.max_positions)
    with atomic_path(path) as tmp, _quiet():
        program = torch.onnx.export(
            model, (ids, mask), dynamo=True, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), opset_version=OPSET, optimize=True,
            verbose=False,
        )
        program.save(str(tmp))


def ort_session(path: Path, *, threads: int = 2, spinning: bool = True):
    import onnxruntime as ort

    from runtime.onnx_backend import disabled_optimizers

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), opts, providers=providers,
                                disabled_optimizers=disabled_optimizers(providers))


def ort_text_logits(session, data: EncodedSplit, *, batch_size: int = 32) -> np.ndarray:
    """Logits of an ONNX session over `data`, batched by similar length like `predict_text_logits`."""
    return logits_by_length(data, batch_size, lambda ids, mask: session.run(
        [OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})[0])


@torch.no_grad()
def check_text_parity(model: EncoderClassifier, onnx_path: Path, data: EncodedSplit, *, atol: float = 1e-4,
                      batch_sizes: tuple[int, ...] = (1, 4), seq_lengths: tuple[int, ...] = (32, 128),
                      rows: int = 8) -> Comparison:
    """ONNX Runtime vs torch at every (batch size, sequence length), every row pooled (`common.compare`); raise
    when max abs diff is beyond `atol`."""
    session = ort_session(onnx_path)
    model.eval()
    outs, refs = [], []
    for length in seq_lengths:
        chunk = at_length(data.take(np.arange(min(rows, len(data))), crop=False), length)
        for b in batch_sizes:
            for i in range(0, len(chunk) - b + 1, b):
                ids, mask = chunk.input_ids[i : i + b], chunk.attention_mask[i : i + b]
                out = session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})[0]
                ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
                if out.shape != ref.shape:
                    raise GateFailed(f"ONNX output shape {out.shape} != torch {ref.shape} at batch {b}, "
                                     f"sequence {length}: an axis was fixed at export")
                outs.append(out)
                refs.append(ref)
    parity = compare(np.concatenate(refs), np.concatenate(outs), Bars(atol=atol), batch_sizes=tuple(batch_sizes),
                     seq_lengths=tuple(seq_lengths))
    if not parity.ok:
        raise GateFailed(f"ONNX export of {Path(onnx_path).name} differs from torch by {parity.max_abs_diff:.2e} "
                         f"(tolerance {atol:.0e}); the export is wrong, not shipped")
    return parity


def file_mb(path: Path) -> float:
    return Path(path).stat().st_size / 1e6
