"""`models.hf.TextTokenizer` for a tokenizer whose padding and unknown tokens have other names than BERT's
([PAD] / [UNK]): RoBERTa's byte-level BPE has <pad> / <unk>. Imported inside functions only."""
from __future__ import annotations

from pathlib import Path

from models.hf import DEFAULT_MAX_LENGTH, ModelFolderError, SpecialTokens, TextTokenizer


class NamedTokenizer(TextTokenizer):
    def __init__(self, tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH, pad: str, unk: str) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for the start and end tokens), got {max_length}")
        self._tok = tokenizer
        self.max_length = max_length
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        special = tuple(sorted(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special))
        pad_id, unk_id = tokenizer.token_to_id(pad), tokenizer.token_to_id(unk)
        if pad_id is None or unk_id is None:
            raise ModelFolderError(f"tokenizer has no padding token {pad!r} or unknown token {unk!r}")
        self.special = SpecialTokens(pad_id, unk_id, special)

    @classmethod
    def from_folder(cls, folder: Path, *, max_length: int, pad: str, unk: str) -> "NamedTokenizer":
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise ModelFolderError(f"{folder} has no tokenizer.json; expected a Hugging Face model folder with "
                                   "config.json, model.safetensors and tokenizer.json")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ModelFolderError(f"{path} is not a readable tokenizers file: {str(e).splitlines()[0]}") from None
        return cls(tok, max_length=max_length, pad=pad, unk=unk)
