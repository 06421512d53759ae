"""A BERT-style encoder classifier onto ONNX Runtime, through the one exporter and parity gate
(compress.export): its two inputs with dynamic batch and sequence axes, checked at several batch sizes and
sequence lengths on a CPU session configured as the runtime's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.tokens import EncodedSplit, at_length
from common.compare import Comparison
from compress.export.onnx_export import MAX_BATCH, OUTPUT_NAME, export_graph, parity_gate
from models.transformer import EncoderClassifier

INPUT_NAMES = ("input_ids", "attention_mask")


def export_text_onnx(model: EncoderClassifier, path: Path, *, example_length: int = 16) -> None:
    """Dynamic batch and sequence axes, from a batch-2 example (only shapes are traced)."""
    ids = torch.full((2, example_length), 5, dtype=torch.long)  # any in-range id
    mask = torch.ones_like(ids)
    mask[1, example_length // 2 :] = 0
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=model.config.max_positions)
    export_graph(model, (ids, mask), path, input_names=INPUT_NAMES,
                 dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))


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


@torch.no_grad()
def check_text_parity(model: EncoderClassifier, onnx_path: Path, data: EncodedSplit, *, atol: float = 1e-4,
                      batch_sizes: tuple[int, ...] = (1, 4), seq_lengths: tuple[int, ...] = (32, 128),
                      rows: int = 8) -> Comparison:
    """ONNX Runtime vs torch at every (batch size, sequence length), every row pooled (`common.compare`); raise
    when max abs diff is beyond `atol`."""
    session = ort_session(onnx_path)
    model.eval()

    def pairs():
        for length in seq_lengths:
            chunk = at_length(data.take(np.arange(min(rows, len(data))), crop=False), length)
            for b in batch_sizes:
                for i in range(0, len(chunk) - b + 1, b):
                    ids, mask = chunk.input_ids[i : i + b], chunk.attention_mask[i : i + b]
                    yield (model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy(),
                           session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})[0])

    return parity_gate(Path(onnx_path), pairs(), atol=atol, batch_sizes=tuple(batch_sizes),
                       seq_lengths=tuple(seq_lengths))
