"""Shrinking a BERT-style encoder classifier (`models.transformer.EncoderClassifier`): layer-drop students
initialised from the teacher, attention-head and FFN-neuron pruning by weight magnitude or first-order Taylor
importance, vocabulary pruning with the id remap baked into the model, and `shrink_encoder`, which chains them
as a recipe's `prune` section asks. Every transform returns a new model and leaves its input untouched.

Every Hugging Face type the family reads (BERT, DistilBERT, RoBERTa) arrives in this one layout
(`compress.families.encoder.hf_adapters` maps their weights at load time), so nothing here depends on the folder's model type; the
vocabulary remap leaves each type's own tokenizer as it was (ids in, dropped ones read as its unknown token).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.data.tokens import EncodedSplit, sorted_chunks
from common.errors import CompressError
from compress.families.encoder.training import predict_text_logits
from models.transformer import EncoderClassifier, count_parameters


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
                  batch_size: int = 32, device: str | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """First-order Taylor importance of every attention head and FFN neuron, per layer: summed over the rows of
    `data`, |sum over a row's tokens of activation * d loss / d activation| (Michel et al. 2019 for heads, Molchanov
    et al. 2019 for neurons): the loss change if that head's context or that neuron's output were zeroed.

    The loss is KL to `teacher_logits` (one row per data row) when given, so the scores rank what the student
    needs to reproduce the teacher; cross-entropy to the labels otherwise. Returns (head scores, FFN scores), CPU
    tensors; the passes run on `device` (None: the CPU) and the model is back on the CPU afterwards.
    """
    from compress.training.device import placed

    with placed(device, model):
        return _taylor_scores(model, data, teacher_logits, batch_size, device)


def _taylor_scores(model, data, teacher_logits, batch_size, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    from compress.training.device import to_device
    from compress.distillation.losses import teacher_logits_tensor

    soft = None if teacher_logits is None else to_device(teacher_logits_tensor(teacher_logits, len(data)), device)
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
            ids, mask, y, rows = (to_device(torch.from_numpy(a), device)
                                  for a in (b.input_ids, b.attention_mask, b.y, idx))
            logits = model(ids, mask)
            if soft is None:
                loss = F.cross_entropy(logits, y, reduction="sum")
            else:
                loss = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(soft[rows], 1),
                                reduction="sum", log_target=True)
            model.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for i, layer in enumerate(layers):
                    x = captured[("heads", i)]
                    h = layer.attention.self.num_heads
                    contrib = (x * x.grad).view(*x.shape[:2], h, -1).sum((1, 3))  # [batch, heads]
                    heads[i] += contrib.abs().sum(0).double().cpu()
                    x = captured[("ffn", i)]
                    ffn[i] += (x * x.grad).sum(1).abs().sum(0).double().cpu()
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


# -- the recipe's student --------------------------------------------------------------------------------

TAYLOR_ROWS = 512  # training texts the Taylor scores are summed over (a 4-layer MiniLM: ~20 s per pass on 2 cores)


def shrink_encoder(model, p, train, special, *, seed: int = 0,
                   device: str | None = None) -> tuple[Any, dict[str, Any], np.ndarray | None]:
    """The student: evenly spaced layers, then the most important heads and FFN neurons (by weight magnitude, or
    with `prune.importance: taylor` by how much the student's match to the teacher's logits depends on them,
    each scored on the student as pruned so far, on `device`), then the used vocabulary."""
    cfg = model.config
    student = model
    if p.layers and p.layers < cfg.layers:
        student = drop_layers(student, evenly_spaced_layers(cfg.layers, p.layers))
    scoring = None
    if p.importance == "taylor" and (p.heads_ratio > 0 or p.ratio > 0):
        rows = np.sort(np.random.default_rng(seed).permutation(len(train))[:TAYLOR_ROWS])
        scoring = train.take(rows, crop=False)
        teacher_logits = predict_text_logits(model, scoring, device=device)

        def scores(m, which: int):
            return taylor_scores(m, scoring, teacher_logits=teacher_logits, device=device)[which]
    if p.heads_ratio > 0:
        student = prune_heads(student, max(1, round(cfg.heads * (1 - p.heads_ratio))),
                              scores=scores(student, 0) if scoring is not None else None)
    if p.ratio > 0:
        student = prune_ffn(student, 1 - p.ratio, round_to=p.round_to,
                            scores=scores(student, 1) if scoring is not None else None)
    keep = None
    if p.vocab:
        keep = used_token_ids(train.input_ids, train.attention_mask, special.all)
        student = prune_vocab(student, keep, unk_id=special.unk)
    s = student.config
    return student, {
        "params_before": count_parameters(model), "params_after": count_parameters(student),
        "layers_kept": s.layers if s.layers == cfg.layers else list(evenly_spaced_layers(cfg.layers, s.layers)),
        "heads": [s.heads_of(i) for i in range(s.layers)], "ffn": [s.ffn_of(i) for i in range(s.layers)],
        "vocab": {"kept": s.vocab_size, "of": s.input_vocab_size},
        "importance": p.importance, **({"importance_rows": len(scoring)} if scoring is not None else {}),
    }, keep


def oov_rate(split, keep_ids: np.ndarray | None) -> float:
    """Share of real tokens whose id vocabulary pruning dropped (they read as [UNK])."""
    if keep_ids is None:
        return 0.0
    return float((~np.isin(split.input_ids[split.attention_mask.astype(bool)], keep_ids)).mean())
