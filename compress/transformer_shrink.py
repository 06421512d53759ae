"""Shrinking a BERT-style encoder classifier (`models.transformer.EncoderClassifier`) and getting it onto
ONNX Runtime: layer-drop students initialised from the teacher, head / FFN-neuron pruning by weight
magnitude or first-order Taylor importance, vocabulary pruning with the id remap baked into the model, a text
training loop (fine-tuning and distillation), ONNX export with dynamic batch and sequence axes, and dynamic INT8
behind an accuracy gate.

Every transform returns a new model and leaves its input untouched.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.text_data import EncodedSplit, at_length, logits_by_length, sorted_chunks
from common.compare import Bars, Comparison, compare, top1_agreement
from common.errors import CompressError, GateFailed
from models.transformer import EncoderClassifier

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
OPSET = 18


# -- layer drop ----------------------------------------------------------------------------------------------

def evenly_spaced_layers(total: int, keep: int) -> tuple[int, ...]:
    """`keep` of `total` layer indices, spread out and starting at 0 (DistilBERT's every-other-layer: 6->3 gives
    0, 2, 4)."""
    if not 1 <= keep <= total:
        raise CompressError(f"cannot keep {keep} of {total} layers; choose 1..{total}")
    step = total / keep
    return tuple(int(math.floor(i * step)) for i in range(keep))


def drop_layers(model: EncoderClassifier, keep: Sequence[int]) -> EncoderClassifier:
    """A student holding only the teacher's layers `keep` (in order); embeddings and head copied."""
    cfg = model.config
    keep = tuple(int(i) for i in keep)
    if not keep or any(not 0 <= i < cfg.layers for i in keep) or len(set(keep)) != len(keep):
        raise CompressError(f"layers to keep {list(keep)} must be distinct indices in 0..{cfg.layers - 1}")
    student = copy.deepcopy(model)
    student.encoder.layer = nn.ModuleList(student.encoder.layer[i] for i in keep)
    student.config = cfg.with_(
        layers=len(keep),
        layer_heads=tuple(cfg.heads_of(i) for i in keep) if cfg.layer_heads else (),
        layer_ffn=tuple(cfg.ffn_of(i) for i in keep) if cfg.layer_ffn else (),
    )
    return student.eval()


# -- structured pruning: FFN neurons and attention heads ----------------------------------------------------

def _round_keep(total: int, ratio: float, round_to: int) -> int:
    if not 0.0 < ratio <= 1.0:
        raise CompressError(f"keep ratio must lie in (0, 1], got {ratio}")
    kept = max(round_to, int(round(total * ratio / round_to)) * round_to)
    return min(total, kept)


def _narrow(linear: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of `linear` keeping output rows (dim 0) or input columns (dim 1) `idx`."""
    w = linear.weight.detach().index_select(dim, idx)
    out = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None)
    out.weight.data.copy_(w)
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[idx])
    return out


def ffn_neuron_scores(model: EncoderClassifier) -> list[torch.Tensor]:
    """Per layer, the magnitude of each FFN neuron: |W_in row| * |W_out column| (L2 norms)."""
    return [layer.intermediate.dense.weight.detach().norm(dim=1) * layer.output.dense.weight.detach().norm(dim=0)
            for layer in model.encoder.layer]


def prune_ffn(model: EncoderClassifier, keep_ratio: float, *, round_to: int = 16,
              scores: Sequence[torch.Tensor] | None = None) -> EncoderClassifier:
    """Keep the `keep_ratio` highest-scoring FFN neurons of every layer (widths rounded to `round_to`); the scores
    are `ffn_neuron_scores` (weight magnitude) unless given (e.g. `taylor_scores`)."""
    out = copy.deepcopy(model)
    widths = []
    for layer, scores in zip(out.encoder.layer, ffn_neuron_scores(model) if scores is None else scores):
        k = _round_keep(len(scores), keep_ratio, round_to)
        idx = torch.sort(torch.topk(scores, k).indices).values
        layer.intermediate.dense = _narrow(layer.intermediate.dense, idx, 0)
        layer.output.dense = _narrow(layer.output.dense, idx, 1)
        widths.append(k)
    out.config = model.config.with_(layer_ffn=tuple(widths))
    return out.eval()


def head_scores(model: EncoderClassifier) -> list[torch.Tensor]:
    """Per layer, the magnitude of each head: L2 norm of its query/key/value rows and output columns."""
    d = model.config.head_dim
    scores = []
    for layer in model.encoder.layer:
        att = layer.attention.self
        h = att.num_heads
        parts = [m.weight.detach().view(h, d, -1).pow(2).sum((1, 2)) for m in (att.query, att.key, att.value)]
        o = layer.attention.output.dense.weight.detach().view(-1, h, d).pow(2).sum((0, 2))
        scores.append((sum(parts) + o).sqrt())
    return scores


def prune_heads(model: EncoderClassifier, keep_heads: int | Sequence[int], *,
                scores: Sequence[torch.Tensor] | None = None) -> EncoderClassifier:
    """Keep `keep_heads` heads per layer (an int for all layers, or one count per layer), highest score first;
    the scores are `head_scores` (weight magnitude) unless given (e.g. `taylor_scores`)."""
    cfg = model.config
    counts = [keep_heads] * cfg.layers if isinstance(keep_heads, int) else list(keep_heads)
    if len(counts) != cfg.layers:
        raise CompressError(f"keep_heads has {len(counts)} entries for {cfg.layers} layers")
    out = copy.deepcopy(model)
    d = cfg.head_dim
    per_layer = head_scores(model) if scores is None else scores
    for i, (layer, scores, k) in enumerate(zip(out.encoder.layer, per_layer, counts)):
        if not 1 <= k <= len(scores):
            raise CompressError(f"layer {i}: cannot keep {k} of {len(scores)} heads; choose 1..{len(scores)}")
        heads = torch.sort(torch.topk(scores, k).indices).values
        idx = (heads[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        att = layer.attention.self
        att.query, att.key, att.value = (_narrow(m, idx, 0) for m in (att.query, att.key, att.value))
        att.num_heads = k
        layer.attention.output.dense = _narrow(layer.attention.output.dense, idx, 1)
    out.config = cfg.with_(layer_heads=tuple(counts))
    return out.eval()


def taylor_scores(model: EncoderClassifier, data: EncodedSplit, *, teacher_logits: np.ndarray | None = None,
                  batch_size: int = 32) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """First-order Taylor importance of every attention head and FFN neuron, per layer: summed over the rows of
    `data`, |sum over a row's tokens of activation * d loss / d activation| (Michel et al. 2019 for heads, Molchanov
    et al. 2019 for neurons): the loss change if that head's context or that neuron's output were zeroed.

    The loss is KL to `teacher_logits` (one row per data row) when given, so the scores rank what the student
    needs to reproduce the teacher; cross-entropy to the labels otherwise. Returns (head scores, FFN scores).
    """
    from compress.distill import teacher_logits_tensor

    soft = None if teacher_logits is None else teacher_logits_tensor(teacher_logits, len(data))
    layers = model.encoder.layer
    heads = [torch.zeros(layer.attention.self.num_heads, dtype=torch.float64) for layer in layers]
    ffn = [torch.zeros(layer.output.dense.in_features, dtype=torch.float64) for layer in layers]
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def keep_input(key):
        def hook(_module, inputs):
            inputs[0].retain_grad()
            captured[key] = inputs[0]
        return hook

    handles = [m.register_forward_pre_hook(keep_input((kind, i)))
               for i, layer in enumerate(layers)
               for kind, m in (("heads", layer.attention.output.dense), ("ffn", layer.output.dense))]
    was_training = model.training
    model.eval()  # no dropout: the scores describe the model as it will be pruned
    try:
        for idx in sorted_chunks(data, batch_size):
            b = data.take(idx)
            logits = model(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
            if soft is None:
                loss = F.cross_entropy(logits, torch.from_numpy(b.y), reduction="sum")
            else:
                loss = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(soft[torch.from_numpy(idx)], 1),
                                reduction="sum", log_target=True)
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for i, layer in enumerate(layers):
                    x = captured[("heads", i)]
                    h = layer.attention.self.num_heads
                    contrib = (x * x.grad).view(*x.shape[:2], h, -1).sum((1, 3))  # [batch, heads]
                    heads[i] += contrib.abs().sum(0).double()
                    x = captured[("ffn", i)]
                    ffn[i] += (x * x.grad).sum(1).abs().sum(0).double()
            captured.clear()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return [s.float() for s in heads], [s.float() for s in ffn]


# -- vocabulary pruning --------------------------------------------------------------------------------------

def used_token_ids(input_ids: np.ndarray, attention_mask: np.ndarray, special: Sequence[int]) -> np.ndarray:
    """Sorted distinct ids that occur on real tokens, plus the special ones."""
    used = np.unique(input_ids[attention_mask.astype(bool)])
    return np.union1d(used, np.asarray(special, dtype=np.int64)).astype(np.int64)


def prune_vocab(model: EncoderClassifier, keep_ids: np.ndarray, *, unk_id: int) -> EncoderClassifier:
    """Keep only the embedding rows `keep_ids`; the model still takes the tokenizer's original ids.

    A remap table (a buffer, exported as an initializer) sends each original id to its row in the smaller
    table and every dropped id to [UNK]'s row. On texts whose tokens are all kept the logits are unchanged.
    """
    cfg = model.config
    original = cfg.input_vocab_size
    keep = np.unique(np.asarray(keep_ids, dtype=np.int64))
    if keep.size == 0 or keep.min() < 0 or keep.max() >= original:
        raise CompressError(f"token ids to keep must lie in 0..{original - 1}")
    if unk_id not in keep:
        keep = np.union1d(keep, [unk_id])
    old_map = model.embeddings.id_map
    rows_in_table = old_map[torch.from_numpy(keep)] if old_map is not None else torch.from_numpy(keep)
    out = copy.deepcopy(model)
    table = model.embeddings.word_embeddings.weight.detach()[rows_in_table]
    out.embeddings.word_embeddings = nn.Embedding.from_pretrained(table.clone(), freeze=False)
    id_map = torch.full((original,), int(np.searchsorted(keep, unk_id)), dtype=torch.long)
    id_map[torch.from_numpy(keep)] = torch.arange(len(keep))
    out.embeddings.register_buffer("id_map", id_map)
    out.config = cfg.with_(vocab_size=len(keep), remap_vocab_size=original)
    return out.eval()


# -- training ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextLoopConfig:
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps with a linear warm-up; then a linear decay to 0
    grad_clip: float = 1.0
    temperature: float = 2.0  # distillation only
    alpha: float = 0.9  # weight of the soft (teacher) term in distillation

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise CompressError(f"epochs, batch_size and lr must be positive, got {self.epochs}, "
                                f"{self.batch_size}, {self.lr}")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise CompressError("warmup must lie in [0, 1), alpha in [0, 1] and temperature above 0")


def crop_copies(data: EncodedSplit, copies: int, seed: int, *, keep: tuple[float, float] = (0.4, 0.9)) -> EncodedSplit:
    """`copies` cropped versions of every row: a random contiguous span of 40-90 % of its tokens between the
    row's first and last token ([CLS] ... [SEP] stay). Labels are the source rows'; the distillation stage
    relabels them with the teacher. Distilling on such crops shows the student the teacher's graded answers on
    partial reviews, not only its near-certain answers on the training texts it was fitted to."""
    rng = np.random.default_rng(seed)
    n, width = data.input_ids.shape
    ids = np.zeros((n * copies, width), data.input_ids.dtype)
    mask = np.zeros_like(ids, dtype=data.attention_mask.dtype)
    lengths = data.lengths
    for c in range(copies):
        for i in range(n):
            length = int(lengths[i])
            inner = length - 2
            row = c * n + i
            if inner < 2:  # nothing to crop
                ids[row, :length], mask[row, :length] = data.input_ids[i, :length], 1
                continue
            span = max(1, int(round(inner * rng.uniform(*keep))))
            start = 1 + int(rng.integers(0, inner - span + 1))
            kept = np.concatenate([data.input_ids[i, :1], data.input_ids[i, start : start + span],
                                   data.input_ids[i, length - 1 : length]])
            ids[row, : len(kept)], mask[row, : len(kept)] = kept, 1
    return EncodedSplit(ids, mask, np.tile(data.y, copies))


def with_rows(a: EncodedSplit, b: EncodedSplit) -> EncodedSplit:
    """`a` followed by `b` (same width)."""
    return EncodedSplit(np.concatenate([a.input_ids, b.input_ids]), np.concatenate([a.attention_mask, b.attention_mask]),
                        np.concatenate([a.y, b.y]))


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows: shuffle, sort within pools of `pool` batches, shuffle batches.

    Padding each batch only to its longest row then costs little (the median review is ~73 tokens of 128).
    """
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit_text(model: EncoderClassifier, data: EncodedSplit, cfg: TextLoopConfig, *, seed: int = 0,
             teacher_logits: np.ndarray | None = None, teacher_hidden: "HiddenTargets | None" = None,
             hidden_weight: float = 0.0, label: str = "train") -> list[float]:
    """Train in place with AdamW and linear warm-up/decay over length-bucketed, dynamically padded batches.

    With `teacher_logits` (one row per training row, e.g. from `predict_text_logits(teacher, data)`), the loss
    is distillation (`compress.distill.kd_loss`); precomputing them saves a teacher forward per step.
    Returns the mean loss of each tenth of training.
    """
    from compress.distill import kd_loss, teacher_logits_tensor
    from common.progress import progress_bar

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warm = int(cfg.warmup * total)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    lengths = data.lengths
    soft = None if teacher_logits is None else teacher_logits_tensor(teacher_logits, len(data))
    model.train()
    losses: list[float] = []
    batches: list[np.ndarray] = []
    with progress_bar(label, total) as advance:
        for step in range(total):
            if not batches:
                batches = length_batches(lengths, cfg.batch_size, rng)
            idx = batches.pop()
            b = data.take(idx)
            ids, mask = torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask)
            if teacher_hidden is not None and hidden_weight > 0:
                logits, hidden = model.forward_with_hidden(ids, mask)
                extra = hidden_weight * hidden_loss(hidden, teacher_hidden.batch(idx, ids.shape[1]), mask)
            else:
                logits, extra = model(ids, mask), 0.0
            y = torch.from_numpy(b.y)
            if soft is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = kd_loss(logits, y, soft[torch.from_numpy(idx)], temperature=cfg.temperature, alpha=cfg.alpha)
            loss = loss + extra
            if not torch.isfinite(loss):
                raise CompressError(f"{label}: loss became {loss.item()} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            advance(loss=float(np.mean(losses[-20:])))
    model.eval()
    chunk = max(1, len(losses) // 10)
    return [float(np.mean(losses[i : i + chunk])) for i in range(0, len(losses), chunk)]


def skip_layer_targets(keep: Sequence[int], teacher_layers: int) -> tuple[int, ...]:
    """For a student holding teacher layers `keep`: the teacher layer whose output each student layer learns.

    Student layer i starts as teacher layer keep[i] and stands in for keep[i] .. keep[i+1]-1, so it is taught the
    output of keep[i+1]-1 (the last one: the teacher's last layer). 6 -> 3 with (0, 2, 4) gives (1, 3, 5).
    """
    keep = tuple(keep)
    return tuple(keep[i + 1] - 1 if i + 1 < len(keep) else teacher_layers - 1 for i in range(len(keep)))


@dataclass(frozen=True)
class HiddenTargets:
    """The teacher's hidden states at the chosen layers, per training row, cut to the row's length (float16)."""

    layers: tuple[int, ...]
    rows: tuple[np.ndarray, ...]  # row i: [length_i, len(layers), hidden]

    def batch(self, idx: np.ndarray, width: int) -> torch.Tensor:
        """[batch, width, len(layers), hidden] float32, zero beyond each row's length."""
        first = self.rows[int(idx[0])]
        out = np.zeros((len(idx), width, *first.shape[1:]), np.float32)
        for j, i in enumerate(idx):
            row = self.rows[int(i)][:width]
            out[j, : len(row)] = row
        return torch.from_numpy(out)


def hidden_loss(student: list[torch.Tensor], target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers and real tokens of 1 - cosine(student, teacher) (DistilBERT's hidden-state loss)."""
    real = mask.bool()
    losses = [(1.0 - F.cosine_similarity(h, target[:, :, j], dim=-1))[real].mean() for j, h in enumerate(student)]
    return torch.stack(losses).mean()


@torch.no_grad()
def teacher_outputs(teacher: EncoderClassifier, data: EncodedSplit, layers: Sequence[int], *,
                    batch_size: int = 64) -> tuple[np.ndarray, HiddenTargets]:
    """The teacher's logits and its hidden states at `layers` for every row (one pass, before distillation)."""
    teacher.eval()
    logits = np.zeros((len(data), teacher.config.num_classes), np.float32)
    rows: list[np.ndarray | None] = [None] * len(data)
    for idx in sorted_chunks(data, batch_size):
        b = data.take(idx)
        out, hidden = teacher.forward_with_hidden(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
        logits[idx] = out.numpy()
        stacked = torch.stack([hidden[k] for k in layers], dim=2).to(torch.float16).numpy()
        for j, i in enumerate(idx):
            rows[int(i)] = stacked[j, : int(b.attention_mask[j].sum())].copy()
    return logits, HiddenTargets(tuple(layers), tuple(rows))


@torch.no_grad()
def predict_text_logits(model: nn.Module, data: EncodedSplit, *, batch_size: int = 64) -> np.ndarray:
    """Logits in the rows' order; batches of similar length, each padded to its longest row."""
    model.eval()
    return logits_by_length(data, batch_size,
                            lambda ids, mask: model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())


def accuracy_of(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


# -- ONNX --------------------------------------------------------------------------------------------------

def export_text_onnx(model: EncoderClassifier, path: Path, *, example_length: int = 16) -> None:
    """Dynamo export with dynamic batch and sequence axes, from a batch-2 example (batch 1 fixes the axis)."""
    from common.atomic import atomic_path
    from compress.export import _quiet

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


# -- dynamic INT8 ------------------------------------------------------------------------------------------

INT8_SCOPES = ("all", "weights")


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


@dataclass(frozen=True)
class Int8Check:
    accuracy_fp32: float
    accuracy_int8: float
    agreement: float  # top-1 agreement of INT8 with FP32
    majority_share: float  # largest share of any one predicted class (1.0 = collapsed to a constant)
    samples: int

    @property
    def drop(self) -> float:
        return self.accuracy_fp32 - self.accuracy_int8

    def to_dict(self) -> dict:
        return {"accuracy_fp32": self.accuracy_fp32, "accuracy_int8": self.accuracy_int8, "drop": self.drop,
                "agreement": self.agreement, "majority_share": self.majority_share, "samples": self.samples}


def check_int8(fp32_logits: np.ndarray, int8_logits: np.ndarray, y: np.ndarray, *, max_drop: float = 0.01,
               min_agreement: float = 0.95, name: str = "INT8 model") -> Int8Check:
    """Compare INT8 with its FP32 reference on labelled data; raise when it collapsed or lost accuracy.

    Dynamic INT8 can wreck a MiniLM while the graph still runs (onnxruntime issue 9599): predictions drift
    towards one class and accuracy falls to the majority rate. Agreement with FP32 and the accuracy drop
    both catch that; the message says which bar was missed.
    """
    pred_q = int8_logits.argmax(1)
    share = float(np.bincount(pred_q).max() / len(pred_q))
    result = Int8Check(accuracy_of(fp32_logits, y), accuracy_of(int8_logits, y),
                       top1_agreement(fp32_logits, int8_logits), share, len(y))
    if result.agreement < min_agreement or result.drop > max_drop:
        collapsed = " (predictions collapsed towards one class)" if share > 0.95 else ""
        raise GateFailed(
            f"{name}: accuracy {result.accuracy_int8:.3f} vs FP32 {result.accuracy_fp32:.3f} "
            f"(drop {100 * result.drop:.1f} pt, limit {100 * max_drop:.1f}), agreement {result.agreement:.3f} "
            f"(minimum {min_agreement}){collapsed}; try quantization scope 'weights', per-channel weights, "
            "or keep FP32")
    return result


def file_mb(path: Path) -> float:
    return Path(path).stat().st_size / 1e6
