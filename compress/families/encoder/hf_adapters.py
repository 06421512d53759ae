"""Hugging Face encoder folders of several model types (BERT, DistilBERT, RoBERTa) read into the one reference
encoder (`models.transformer.EncoderClassifier`), so every later stage (fine-tune, shrink, distill, ONNX,
INT8, LiteRT, the runtime) sees a single layout whatever the folder held.

An `Adapter` per model type says where that type keeps things: its config keys, how its weight names map onto
the reference ones (DistilBERT's ``transformer.layer.N.attention.q_lin`` is ``encoder.layer.N.attention.self.
query``), what its embeddings need (RoBERTa's positions start after ``padding_idx``; DistilBERT has no token
types), its special tokens and its sequence-classification head. A pretrained head is kept as the model's
``classifier``: a ``Sequential(dense, activation, dropout, out)`` on the first token (`headed`).

Nothing here fetches or runs code from the folder: config.json is JSON, the weights are read with safetensors.
Torch-free at import time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.errors import CompressError

ACTIVATIONS = ("gelu",)  # the reference encoder's FFN activation (exact erf GELU)
CONFIG_KEY = "edge_compress.encoder_config"  # checkpoint metadata: the EncoderConfig, as JSON
HEAD_KEY = "edge_compress.classifier_head"  # checkpoint metadata: the kept head's activation


@dataclass(frozen=True)
class Adapter:
    """Where one Hugging Face model type keeps its parts, relative to the reference encoder."""

    model_type: str
    prefix: str  # the base model's attribute in *ForSequenceClassification ("bert.")
    keys: dict[str, str]  # reference EncoderConfig field -> this type's config.json key
    activation_key: str
    renames: tuple[tuple[str, Any], ...] = ()  # regex -> replacement (str or function), prefix removed
    head: tuple[str, str] = ("", "")  # weight names of the head's dense layer and output layer
    head_activation: str = "tanh"
    pad_token: str = "[PAD]"
    unk_token: str = "[UNK]"
    tokenizer: str = "WordPiece"
    fixed: dict[str, Any] = field(default_factory=dict)  # EncoderConfig values this type always has
    embeddings: Callable[[dict, dict, Any], dict] | None = field(default=None, compare=False)

    def position_offset(self, hf: dict) -> int:
        """Rows of the position table before the first real token's (RoBERTa: padding_idx + 1)."""
        return int(hf.get("pad_token_id", 1)) + 1 if self.model_type == "roberta" else 0

    def rename(self, name: str) -> str:
        name = name.removeprefix(self.prefix)
        for pattern, replacement in self.renames:
            name = re.sub(pattern, replacement, name)
        return name


def _roberta_embeddings(hf: dict, state: dict, cfg) -> dict:
    """Positions: RoBERTa numbers real tokens from padding_idx + 1 (right padding: exactly the rows from there on;
    padded positions are masked out of attention and pooling, so their rows do not matter)."""
    key = "embeddings.position_embeddings.weight"
    if key in state:
        state[key] = state[key][ADAPTERS["roberta"].position_offset(hf):][: cfg.max_positions]
    return state


def _distilbert_embeddings(hf: dict, state: dict, cfg) -> dict:
    """No token types: a zero row, so the reference encoder's token-type add changes nothing."""
    import torch

    state["embeddings.token_type_embeddings.weight"] = torch.zeros(cfg.type_vocab_size, cfg.hidden)
    return state


_BERT_KEYS = {"vocab_size": "vocab_size", "hidden": "hidden_size", "layers": "num_hidden_layers",
              "heads": "num_attention_heads", "ffn": "intermediate_size", "max_positions": "max_position_embeddings",
              "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps",
              "dropout": "hidden_dropout_prob"}

ADAPTERS: dict[str, Adapter] = {
    "bert": Adapter("bert", "bert.", _BERT_KEYS, "hidden_act", head=("pooler.dense", "classifier")),
    "roberta": Adapter("roberta", "roberta.", _BERT_KEYS, "hidden_act",
                       renames=((r"^classifier\.dense\.", "head_dense."), (r"^classifier\.out_proj\.", "head_out.")),
                       head=("head_dense", "head_out"), pad_token="<pad>", unk_token="<unk>",
                       tokenizer="byte-level BPE", embeddings=_roberta_embeddings),
    "distilbert": Adapter(
        "distilbert", "distilbert.",
        {"vocab_size": "vocab_size", "hidden": "dim", "layers": "n_layers", "heads": "n_heads", "ffn": "hidden_dim",
         "max_positions": "max_position_embeddings", "dropout": "dropout"}, "activation",
        renames=((r"^transformer\.layer\.", "encoder.layer."),
                 (r"\.attention\.([qkv])_lin\.", lambda m: ".attention.self." + {"q": "query", "k": "key",
                                                                                "v": "value"}[m.group(1)] + "."),
                 (r"\.attention\.out_lin\.", ".attention.output.dense."),
                 (r"\.sa_layer_norm\.", ".attention.output.LayerNorm."),
                 (r"\.ffn\.lin1\.", ".intermediate.dense."), (r"\.ffn\.lin2\.", ".output.dense."),
                 (r"\.output_layer_norm\.", ".output.LayerNorm.")),
        head=("pre_classifier", "classifier"), head_activation="relu", fixed={"type_vocab_size": 1},
        embeddings=_distilbert_embeddings),
}
SUPPORTED = tuple(ADAPTERS)
_DECODER_ARCHS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


@dataclass(frozen=True)
class FolderSpec:
    """What a folder's config.json says, checked: its adapter and its sequence-classification head (if any)."""

    folder: Path
    adapter: Adapter
    hf: dict = field(compare=False)
    head_labels: tuple[str, ...] = ()  # the pretrained head's classes, in its order (empty: no head)

    @property
    def model_type(self) -> str:
        return self.adapter.model_type


def _refuse(folder: Path, why: str) -> CompressError:
    return CompressError(f"model folder {folder}: {why}")


def read_folder(folder: str | Path) -> FolderSpec:
    """The folder's config.json checked for a supported encoder; one-line CompressError otherwise."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "folder missing"
        raise _refuse(folder, f"no config.json (found: {present}); expected a Hugging Face model folder with "
                              "config.json, model.safetensors and tokenizer.json")
    try:
        hf = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise _refuse(folder, f"config.json is not readable JSON: {e}") from None
    if not isinstance(hf, dict):
        raise _refuse(folder, "config.json is not a JSON object")
    kind = hf.get("model_type")
    archs = [str(a) for a in hf.get("architectures") or []]
    if hf.get("is_decoder") or any(a.endswith(_DECODER_ARCHS) for a in archs):
        raise _refuse(folder, f"model_type {kind!r} ({', '.join(archs) or 'is_decoder'}) is a text generator, "
                              f"not an encoder to classify with; supported: {', '.join(SUPPORTED)}")
    if kind not in ADAPTERS:
        raise _refuse(folder, f"model_type {kind!r} has no sequence-classification encoder here; supported: "
                              f"{', '.join(SUPPORTED)}")
    adapter = ADAPTERS[kind]
    act = hf.get(adapter.activation_key, "gelu")
    position = hf.get("position_embedding_type", "absolute")
    if act not in ACTIVATIONS or position != "absolute":
        raise _refuse(folder, f"{kind} with {adapter.activation_key} {act!r} and {position!r} positions is not "
                              "supported; the encoder here runs exact GELU with absolute positions")
    return FolderSpec(folder, adapter, hf, _head_labels(hf, archs))


def _head_labels(hf: dict, archs: list[str]) -> tuple[str, ...]:
    """The classes of a pretrained sequence-classification head (none unless the architecture says it has one;
    a regression or multi-label head is not a single-label classifier and counts as none)."""
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        return ()
    if hf.get("problem_type") in ("regression", "multi_label_classification"):
        return ()
    id2label = hf.get("id2label") or {}
    try:
        n = len(id2label) or int(hf.get("num_labels", 0))
        return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))
    except (TypeError, ValueError):
        return ()


def max_positions(spec: FolderSpec) -> int:
    """The longest input the folder's position table takes (RoBERTa's, less its padding offset)."""
    try:
        return int(spec.hf.get("max_position_embeddings", 512)) - spec.adapter.position_offset(spec.hf)
    except (TypeError, ValueError):
        raise _refuse(spec.folder, "config.json has a max_position_embeddings that is not a number") from None


def folder_config(spec: FolderSpec, *, num_classes: int, pooling: str, dropout: float | None = None):
    """The reference EncoderConfig the folder's encoder maps onto."""
    from models.transformer import EncoderConfig

    a, hf = spec.adapter, spec.hf
    # the defaults are transformers' BertConfig ones
    values: dict[str, Any] = {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "dropout": 0.1, "max_positions": 512}
    try:
        values.update({name: hf[key] for name, key in a.keys.items() if key in hf or name not in values})
        values.update(a.fixed)
        values["max_positions"] -= a.position_offset(hf)
        if dropout is not None:
            values["dropout"] = dropout
        return EncoderConfig(num_classes=num_classes, pooling=pooling, **values)
    except KeyError as e:
        raise _refuse(spec.folder, f"{spec.model_type} config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise _refuse(spec.folder, f"{spec.model_type} config.json does not describe an encoder: {e}") from None


# -- weights ---------------------------------------------------------------------------------------------------

def read_weights(spec: FolderSpec) -> dict:
    """The folder's tensors under reference names (float32), embeddings adapted; safetensors only."""
    import torch
    from safetensors.torch import load_file

    path = spec.folder / "model.safetensors"
    if not path.is_file():
        raise _refuse(spec.folder, "no model.safetensors (only safetensors weights are read: no pickled code runs)")
    try:
        raw = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError on a bad file
        raise _refuse(spec.folder, f"model.safetensors is unreadable: {str(e).splitlines()[0][:200]}") from None
    return {spec.adapter.rename(k): v.to(torch.float32) for k, v in raw.items()}


def keeps_head(spec: FolderSpec, num_classes: int) -> bool:
    return bool(spec.head_labels) and len(spec.head_labels) == num_classes


def load_folder_model(spec: FolderSpec, *, num_classes: int, pooling: str, seed: int = 0,
                      dropout: float | None = None):
    """The folder's encoder in the reference layout; its pretrained head when `keeps_head`, else a fresh
    classifier (normal(0, 0.02), seeded by `seed`)."""
    from models.transformer import build_encoder

    keep = keeps_head(spec, num_classes)
    cfg = folder_config(spec, num_classes=num_classes, pooling="cls" if keep else pooling, dropout=dropout)
    model = build_encoder(cfg, seed=seed)
    weights = read_weights(spec)
    if spec.adapter.embeddings is not None:
        weights = spec.adapter.embeddings(spec.hf, weights, cfg)
    wanted = model.state_dict()
    state = {k: v for k, v in weights.items() if k in wanted and not k.startswith("classifier.")}
    missing = sorted(k for k in wanted if k not in state and not k.startswith("classifier."))
    if missing:
        raise _refuse(spec.folder, f"model.safetensors lacks {len(missing)} {spec.model_type} encoder weights "
                                   f"(first: {missing[0]}); is it a {spec.model_type} checkpoint?")
    bad = next((k for k, v in state.items() if v.shape != wanted[k].shape), None)
    if bad is not None:
        raise _refuse(spec.folder, f"weight {bad} has shape {tuple(state[bad].shape)}, config.json implies "
                                   f"{tuple(wanted[bad].shape)}")
    model.load_state_dict(state, strict=False)
    if keep:
        dense, out = spec.adapter.head
        try:
            parts = [weights[f"{name}.{p}"] for name in (dense, out) for p in ("weight", "bias")]
        except KeyError as e:
            raise _refuse(spec.folder, f"config.json names a classification head but model.safetensors lacks "
                                       f"{e.args[0]}") from None
        headed(model, spec.adapter.head_activation, parts)
    return model.eval()


def headed(model, activation: str, parts=None):
    """Replace `model.classifier` by dense -> activation -> dropout -> out (a pretrained HF head), in place;
    `parts` = (dense weight, dense bias, out weight, out bias), or None for the shapes alone (loading)."""
    from torch import nn

    cfg = model.config
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]()
    head = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), act, nn.Dropout(cfg.dropout),
                         nn.Linear(cfg.hidden, cfg.num_classes))
    if parts is not None:
        for linear, (w, b) in zip((head[0], head[3]), (parts[:2], parts[2:])):
            if tuple(w.shape) != tuple(linear.weight.shape):
                raise CompressError(f"classification head weight of shape {tuple(w.shape)}; the encoder implies "
                                    f"{tuple(linear.weight.shape)}")
            linear.weight.data.copy_(w)
            linear.bias.data.copy_(b)
    model.classifier = head
    model.head_activation = activation
    return model


def save_checkpoint(model, path: str | Path) -> Path:
    """One safetensors file: the weights, and as its metadata our config (per-layer widths, vocabulary remap)
    and a kept head's activation. Written atomically: a killed save leaves the previous file (or none)."""
    from safetensors.torch import save_file

    from common.atomic import atomic_path

    path = Path(path)
    meta = {CONFIG_KEY: json.dumps(model.config.to_dict())}
    activation = getattr(model, "head_activation", None)
    if activation is not None:
        meta[HEAD_KEY] = activation
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_checkpoint(path: str | Path):
    """A checkpoint written by `save_checkpoint` (safetensors: no code runs while loading), a kept head rebuilt."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from models.hf import ModelFolderError
    from models.transformer import EncoderClassifier, EncoderConfig

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"encoder checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        model = EncoderClassifier(EncoderConfig.from_dict(json.loads(meta[CONFIG_KEY])))
        if HEAD_KEY in meta:
            headed(model, meta[HEAD_KEY])
        model.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise ModelFolderError(f"{path} is not an encoder checkpoint written by edge-compress: {e}") from None
    return model.eval()


# -- labels and tokenizer --------------------------------------------------------------------------------------

def head_label_order(data_labels: tuple[str, ...], head_labels: tuple[str, ...]) -> tuple[tuple[str, ...], list | None]:
    """(labels to ship, `order`): class i of the kept head is data label `order[i]` (None: keep the data's order).

    Data labels that name the head's classes (case aside) are lined up with them; labels that are the head's
    class numbers ("0", "1", ...) take the head's names (the data have none of their own)."""
    lower = [h.lower() for h in head_labels]
    if sorted(d.lower() for d in data_labels) == sorted(lower) and len(set(lower)) == len(lower):
        by_name = {d.lower(): i for i, d in enumerate(data_labels)}
        order = [by_name[h] for h in lower]
        return tuple(data_labels[i] for i in order), (None if order == sorted(order) else order)
    if sorted(data_labels) == sorted(str(i) for i in range(len(head_labels))):
        order = [data_labels.index(str(i)) for i in range(len(head_labels))]
        return head_labels, (None if order == sorted(order) else order)
    return data_labels, None


def folder_tokenizer(spec: FolderSpec, *, max_length: int):
    """The folder's tokenizer.json with this type's pad / unk tokens (tokenizer_config.json's names first)."""
    from models.hf import ModelFolderError, load_tokenizer

    if spec.model_type == "bert":
        return load_tokenizer(spec.folder, max_length=max_length)  # what the default MiniLM has always used
    names = {"pad_token": spec.adapter.pad_token, "unk_token": spec.adapter.unk_token}
    try:
        extra = json.loads((spec.folder / "tokenizer_config.json").read_text())
        for key in names:
            value = extra.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            names[key] = value if isinstance(value, str) else names[key]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return load_tokenizer(spec.folder, max_length=max_length, pad=names["pad_token"], unk=names["unk_token"])
    except ModelFolderError as e:
        raise CompressError(f"{spec.model_type}: {e}") from None
