"""A reference BERT-style encoder classifier: configurable layers, heads, hidden and FFN widths.

Parameter names follow Hugging Face's `BertModel` (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ...), so a BERT checkpoint's safetensors load into it
directly (see `compress.families.encoder.hf_adapters`), and its forward equals `transformers.BertModel`'s to float precision (a test
checks this on all-MiniLM-L6-v2). It is written out rather than wrapped because compression needs what
transformers 5 no longer offers or makes hard to export: per-layer head and FFN widths after pruning
(`prune_heads` is gone in transformers 5), a vocabulary remap baked in front of the embedding, and a plain
graph for the ONNX exporter (inputs: int64 ``input_ids`` and ``attention_mask``, both ``[batch, seq]``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F

POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522  # rows of the token-embedding table
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    ffn: int = 1536
    num_classes: int = 2
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    pooling: str = "mean"  # mean over the attention mask (how all-MiniLM was trained) or the [CLS] token
    # after pruning: per-layer widths (empty = `heads` / `ffn` everywhere); the head size stays hidden // heads
    layer_heads: tuple[int, ...] = field(default=())
    layer_ffn: tuple[int, ...] = field(default=())
    # after vocabulary pruning: size of the original id space mapped onto the table (0 = no remap)
    remap_vocab_size: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "heads", "ffn", "num_classes", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}; "
                             f"try heads={_divisor_near(self.hidden, self.heads)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} unknown; known: {', '.join(POOLINGS)}")
        for name in ("layer_heads", "layer_ffn"):
            value = getattr(self, name)
            if value and len(value) != self.layers:
                raise ValueError(f"{name} has {len(value)} entries for {self.layers} layers")
            if any(v < 1 for v in value):
                raise ValueError(f"{name} entries must be >= 1, got {list(value)}")
        if self.remap_vocab_size and self.remap_vocab_size < self.vocab_size:
            raise ValueError(f"remap_vocab_size {self.remap_vocab_size} is smaller than the table ({self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def heads_of(self, layer: int) -> int:
        return self.layer_heads[layer] if self.layer_heads else self.heads

    def ffn_of(self, layer: int) -> int:
        return self.layer_ffn[layer] if self.layer_ffn else self.ffn

    @property
    def input_vocab_size(self) -> int:
        """The id space the model accepts (the tokenizer's), whether or not the table was pruned."""
        return self.remap_vocab_size or self.vocab_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_heads"], d["layer_ffn"] = list(self.layer_heads), list(self.layer_ffn)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        d = dict(d)
        d["layer_heads"], d["layer_ffn"] = tuple(d.get("layer_heads", ())), tuple(d.get("layer_ffn", ()))
        return cls(**d)

    def with_(self, **changes) -> "EncoderConfig":
        return replace(self, **changes)


def _divisor_near(n: int, k: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - k))


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.remap_vocab_size:
            # original tokenizer id -> row of the pruned table; ids the table dropped map to [UNK]'s row
            self.register_buffer("id_map", torch.zeros(cfg.remap_vocab_size, dtype=torch.long))
        else:
            self.register_buffer("id_map", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.id_map is not None:
            input_ids = self.id_map[input_ids]
        seq = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:seq].unsqueeze(0)
        x = x + self.token_type_embeddings.weight[0]  # single-segment inputs: token type 0 everywhere
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, head_dim
        width = heads * head_dim
        self.query = nn.Linear(hidden, width)
        self.key = nn.Linear(hidden, width)
        self.value = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # divide, not multiply by the inverse: the form ONNX Runtime's optimizer fuses (compress.families.encoder.ort_fusion)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        probs = self.dropout(torch.softmax(scores, dim=-1))
        return torch.matmul(probs, v).transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)


class _DenseNorm(nn.Module):
    """HF's BertSelfOutput / BertOutput: dense, dropout, residual add, LayerNorm."""

    def __init__(self, in_features: int, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: EncoderConfig, heads: int) -> None:
        super().__init__()
        setattr(self, "self", SelfAttention(cfg.hidden, heads, cfg.head_dim, cfg.dropout))
        self.output = _DenseNorm(heads * cfg.head_dim, cfg.hidden, cfg.layer_norm_eps, cfg.dropout)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(getattr(self, "self")(x, mask_bias), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, cfg: EncoderConfig, index: int) -> None:
        super().__init__()
        self.attention = Attention(cfg, cfg.heads_of(index))
        self.intermediate = Intermediate(cfg.hidden, cfg.ffn_of(index))
        self.output = _DenseNorm(cfg.ffn_of(index), cfg.hidden, cfg.layer_norm_eps, cfg.dropout)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        h = self.attention(x, mask_bias)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg, i) for i in range(cfg.layers))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask_bias)
        return x


class EncoderClassifier(nn.Module):
    """forward(input_ids, attention_mask) -> logits [batch, num_classes]; both inputs int64 [batch, seq]."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, cfg.num_classes)

    @staticmethod
    def _mask_bias(attention_mask: torch.Tensor) -> torch.Tensor:
        # additive bias: 0 on tokens, a large negative on padding (what transformers' BERT adds); unsqueezed
        # before the cast, the order ONNX Runtime's attention fusion matches
        return (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(torch.float32)) * torch.finfo(torch.float32).min

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [batch, seq, hidden]."""
        return self.encoder(self.embeddings(input_ids), self._mask_bias(attention_mask))

    def forward_with_hidden(self, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every layer's output [batch, seq, hidden] (hidden-state distillation); not exported."""
        mask_bias = self._mask_bias(attention_mask)
        x = self.embeddings(input_ids)
        hidden = []
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
            hidden.append(x)
        return self.classifier(self.dropout(self.pool(x, attention_mask))), hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.encode(input_ids, attention_mask), attention_mask)
        return self.classifier(self.dropout(pooled))


def build_encoder(cfg: EncoderConfig, *, seed: int | None = None) -> EncoderClassifier:
    """A randomly initialised encoder (BERT's init: normal(0, 0.02), LayerNorm 1/0)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = EncoderClassifier(cfg)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
