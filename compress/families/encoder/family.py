"""The BERT-style text encoder family: a pretrained Hugging Face folder (all-MiniLM-L6-v2 by default; BERT,
DistilBERT or RoBERTa, read into the one reference encoder by `compress.families.encoder.hf_adapters`, its classification head kept
when it fits the data) or a randomly initialised encoder on a word-level vocabulary. It fine-tunes with AdamW on
length-bucketed batches, shrinks by dropping layers, heads, FFN neurons and unused vocabulary, distills on logits
(and hidden states), and quantizes to dynamic INT8; the shipped model carries its tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import CompressError
from compress.families.base import ModelFamily


@dataclass(frozen=True)
class TextData:
    """Tokenized splits (`bench.data.tokens.EncodedSplit`) and what identifies them for the cache."""

    name: str
    labels: tuple[str, ...]
    train: Any
    val: Any
    test: Any
    max_length: int
    fingerprint: str  # texts, labels, tokenizer and max_length
    tokenizer: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def model_folder(recipe) -> Path | None:
    """The Hugging Face folder a pretrained encoder comes from (None for a randomly initialised one)."""
    from models.hf import ModelFolderError, minilm_path

    m = recipe.model
    if not m.pretrained:
        return None
    try:
        return Path(m.path) if m.path else minilm_path()
    except ModelFolderError as e:
        raise CompressError(str(e)) from None


def tokenize(recipe, texts, folder: Path | None) -> TextData:
    """The texts, tokenized by the model's own tokenizer (or a word-level one built from the training texts).
    A folder's pretrained classification head that is kept decides the order (and, for numbered data labels,
    the names) of the classes."""
    from compress.cache import stage_key
    from models.hf import ModelFolderError, word_level_tokenizer

    d = recipe.data
    labels, order = texts.labels, None
    try:
        if folder is not None:
            from compress.families.encoder.hf_adapters import folder_tokenizer, max_positions, read_folder

            spec = read_folder(folder)
            if d.max_length > max_positions(spec):
                raise CompressError(f"data.max_length {d.max_length} exceeds the {spec.model_type} model's "
                                    f"{max_positions(spec)} positions; lower data.max_length")
            tokenizer = folder_tokenizer(spec, max_length=d.max_length)
            labels, order = _head_labels(spec, texts.labels)
        else:
            tokenizer = word_level_tokenizer(sorted({w for t in texts.train.texts for w in t.lower().split()}),
                                             max_length=d.max_length)
    except ModelFolderError as e:
        raise CompressError(str(e)) from None
    train, val, test = (_relabel(tokenizer.encode_split(s), order) for s in (texts.train, texts.val, texts.test))
    fingerprint = stage_key(texts.fingerprint, tokenizer.digest())
    if order is not None or labels != texts.labels:  # only then: the default model's keys stay as they were
        fingerprint = stage_key(fingerprint, list(labels), order)
    return TextData(texts.name, labels, train, val, test, d.max_length, fingerprint, tokenizer)


def _head_labels(spec, labels: tuple[str, ...]):
    """(labels, order) for a folder (`compress.families.encoder.hf_adapters.head_label_order`), with one log line on the head."""
    from compress.driver import log
    from compress.families.encoder.hf_adapters import head_label_order, keeps_head

    if not spec.head_labels:
        return labels, None
    n = len(spec.head_labels)
    if not keeps_head(spec, len(labels)):
        log(f"model: the {spec.model_type} folder's classification head has {n} classes, the data have "
            f"{len(labels)}; using a fresh {len(labels)}-class head")
        return labels, None
    labels, order = head_label_order(labels, spec.head_labels)
    log(f"model: keeping the {spec.model_type} folder's pretrained {n}-class head (first-token pooling), "
        f"classes {', '.join(labels)}")
    return labels, order


def _relabel(split, order):
    """y in the kept head's class order: data label order[i] becomes class i."""
    import numpy as np

    if order is None:
        return split
    remap = np.empty(len(order), dtype=np.int64)
    remap[np.asarray(order)] = np.arange(len(order))
    return type(split)(split.input_ids, split.attention_mask, remap[split.y])


class TextEncoder(ModelFamily):
    name = "encoder"
    kind = "text"
    archs: tuple[str, ...] = ("bert",)
    suffix = ".safetensors"
    quantize_modes = ("dynamic",)
    int8_kind = "ONNX Runtime dynamic INT8"
    described = {"baseline": "fine-tuned FP32 baseline", "pruned": "shrunk + fine-tuned, no teacher",
                 "distilled": "shrunk + distilled"}

    def check_recipe(self, recipe) -> None:
        from compress.recipe import RecipeError

        if recipe.quantize.enabled and recipe.quantize.mode not in self.quantize_modes:
            raise RecipeError("Transformer recipes quantize with quantize.mode: dynamic (static QDQ is CNN-only here)")
        if recipe.prune.enabled and recipe.prune.auto:
            raise RecipeError("prune.ratio auto chooses CNN channel widths in this version; give Transformer recipes a "
                              "number (the fraction of FFN neurons removed)")
        if recipe.prune.enabled and recipe.prune.blocks > 0:
            raise RecipeError("prune.blocks drops CNN / ViT blocks; Transformer recipes keep fewer encoder layers with "
                              "prune.layers")
        m = recipe.model
        if m.pretrained and m.path and (Path(m.path) / "config.json").is_file():  # a folder of the wrong kind:
            from compress.families.encoder.hf_adapters import read_folder  # refused before any work (a missing one: at prepare)

            try:
                read_folder(m.path)
            except CompressError as e:
                raise RecipeError(str(e)) from None

    # -- model and data ---------------------------------------------------------------------------
    def prepare(self, recipe, raw) -> TextData:
        from compress.training import distributed

        if distributed.world_size() > 1:
            raise CompressError("--nproc above 1 is not supported for Transformer recipes yet (their training loop "
                                "is the shared data-parallel one; tokenizing, shrinking and teacher outputs are not "
                                "split over ranks); run with --nproc 1")
        return tokenize(recipe, raw, model_folder(recipe))

    def describe_data(self, data: TextData) -> str:
        cut = float((data.train.lengths >= data.max_length).mean())
        return (f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test {len(data.test)} texts, "
                f"max {data.max_length} tokens ({cut:.1%} of training texts cut), {data.num_classes} classes")

    def new_model(self, run):
        from models.transformer import EncoderConfig, build_encoder

        m, data = run.recipe.model, run.data
        folder = model_folder(run.recipe)
        if folder is not None:
            from compress.families.encoder.hf_adapters import load_folder_model, read_folder

            return load_folder_model(read_folder(folder), num_classes=data.num_classes, pooling=m.pooling,
                                     seed=run.recipe.seed)
        cfg = EncoderConfig(vocab_size=data.tokenizer.vocab_size, hidden=m.hidden, layers=m.layers, heads=m.heads,
                            ffn=m.ffn, num_classes=data.num_classes, max_positions=max(data.max_length, 16),
                            pooling=m.pooling)
        return build_encoder(cfg, seed=run.recipe.seed)

    def load(self, run, path: Path):
        from compress.families.encoder.hf_adapters import load_checkpoint

        return load_checkpoint(path)

    def save(self, model, path: Path) -> None:
        from compress.families.encoder.hf_adapters import save_checkpoint

        save_checkpoint(model, path)

    def fit(self, run, model, split, epochs: float, lr: float, *, seed: int, label: str, **teaching) -> list[float]:
        from compress.families.encoder.training import TextLoopConfig, fit_text

        t, kd = run.recipe.train, {k: teaching.pop(k) for k in ("temperature", "alpha") if k in teaching}
        loop = TextLoopConfig(epochs=epochs, batch_size=t.batch_size, lr=lr, weight_decay=t.weight_decay,
                              precision=t.precision, **kd)
        return fit_text(model, split, loop, seed=seed, label=label, device=self.device(run), **teaching)

    def accuracy(self, run, model) -> float:
        from compress.families.encoder.training import accuracy_of, predict_text_logits

        return accuracy_of(predict_text_logits(model, run.data.val, device=self.device(run)), run.data.val.y)

    def chance(self, data) -> float:
        return 1.2 / data.num_classes

    # -- fine-tune, shrink, distill ---------------------------------------------------------------
    def train(self, run, out: Path) -> dict[str, Any]:
        from models.transformer import count_parameters

        r = run.recipe
        model = self.new_model(run)
        curve = [] if r.train.epochs == 0 else self.fit(run, model, run.data.train, r.train.epochs, r.train.lr,
                                                           seed=r.seed, label="fine-tune")
        self.save(model, out)
        return {"val_accuracy": self.accuracy(run, model), "loss_curve": curve, "params": count_parameters(model),
                "device": self.device(run)}

    def shrinks(self, recipe) -> bool:
        p = recipe.prune
        return bool(p.enabled and (p.layers or p.auto or p.ratio > 0 or p.heads_ratio > 0 or p.vocab))

    def prune(self, run, raw_out: Path, pruned_out: Path) -> dict[str, Any]:
        """Layers, heads, FFN neurons and vocabulary (compress.families.encoder.shrink), then fine-tuning without a
        teacher when `prune.finetune_epochs` > 0 (the ablation's "pruned" row)."""
        from compress.families.encoder.shrink import oov_rate, shrink_encoder

        r, data, p = run.recipe, run.data, run.recipe.prune
        raw, info, keep_ids = shrink_encoder(run.teacher, p, data.train, data.tokenizer.special, seed=r.seed + 6,
                                             device=self.device(run))
        info["vocab"]["oov_token_rate"] = {name: oov_rate(split, keep_ids)
                                           for name, split in (("val", data.val), ("test", data.test))}
        info["val_accuracy_pruned"] = self.accuracy(run, raw)
        self.save(raw, raw_out)
        curve, accuracy = [], info["val_accuracy_pruned"]
        if p.finetune_epochs > 0:
            curve = self.fit(run, raw, data.train, p.finetune_epochs, p.lr, seed=r.seed + 1, label="fine-tune pruned")
            accuracy = self.accuracy(run, raw)
        self.save(raw, pruned_out)
        return {**info, "val_accuracy": accuracy, "loss_curve": curve, "device": self.device(run)}

    def distill(self, run, source: Path, out: Path) -> dict[str, Any]:
        """Logit distillation from the fine-tuned model, on the training texts plus `distill.augment` cropped
        copies labelled by the teacher, and hidden-state matching when `distill.feature_weight` > 0."""
        from compress.families.encoder import training as tt

        r, d, teacher, data = run.recipe, run.recipe.distill, run.teacher, run.data
        student = self.load(run, source)
        before = self.accuracy(run, student)
        hidden, extra, train = None, {}, data.train
        if d.augment:  # cropped copies of the training texts; their hard labels are the teacher's answers
            train = tt.with_rows(train, tt.crop_copies(train, d.augment, seed=r.seed + 5))
            extra["augmented_rows"] = len(train) - len(data.train)
        if d.feature_weight > 0:  # also match hidden states, layer by layer (student layer <- teacher layer)
            kept = run.done["prune"].metrics["layers_kept"] if "prune" in run.done else teacher.config.layers
            keep = list(range(kept)) if isinstance(kept, int) else kept
            targets = tt.skip_layer_targets(keep, teacher.config.layers)
            soft, hidden = tt.teacher_outputs(teacher, train, targets, device=self.device(run))
            extra["hidden_state_targets"] = {"student_layers_from": keep, "teacher_layers_taught": list(targets),
                                             "loss": "1 - cosine", "weight": d.feature_weight}
        else:
            soft = tt.predict_text_logits(teacher, train, device=self.device(run))
        if d.augment:
            train.y[len(data.train):] = soft[len(data.train):].argmax(1)
        curve = self.fit(run, student, train, d.epochs, d.lr, temperature=d.temperature, alpha=d.alpha,
                         seed=r.seed + 2, teacher_logits=soft, teacher_hidden=hidden, hidden_weight=d.feature_weight,
                         label="distill")
        self.save(student, out)
        return {"val_accuracy_before": before, "val_accuracy": self.accuracy(run, student), "loss_curve": curve,
                "device": self.device(run), **extra}

    # -- export and INT8 --------------------------------------------------------------------------
    def export(self, run, model, path: Path) -> dict[str, Any]:
        """ONNX with dynamic batch and sequence axes (attention fused by ONNX Runtime's transformer optimizer
        when `target.ort_fusion`), checked against torch at two sequence lengths."""
        from compress.families.encoder import ort_fusion
        from compress.families.encoder.export import check_text_parity, export_text_onnx

        t, length = run.recipe.target, run.data.max_length
        export_text_onnx(model, path)
        fused = ort_fusion.fuse_encoder(path, path) if t.ort_fusion else None
        parity = check_text_parity(model, path, run.data.val, atol=t.parity_atol,
                                   seq_lengths=(max(8, length // 4), length)).to_dict()
        if fused is not None:
            parity["fused_ops"] = fused
        return parity

    def quantize(self, run, source: str, fp32: Path, out: Path, *, tuned: bool) -> dict[str, Any]:
        """Dynamic INT8. `tuned`: the searched one (scope and per-channel candidates, the fastest within the bar);
        otherwise what ONNX Runtime's quantize_dynamic gives with its defaults, for comparison."""
        import tempfile

        from compress.driver import WORKDIR_PREFIX
        from compress.families.encoder.quantize import op_counts, quantize_dynamic_int8, search_dynamic_int8, val_agreement

        threads = run.recipe.bench.threads
        if tuned:
            with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=run.out_dir) as work:
                result = search_dynamic_int8(fp32, out, run.data, run.recipe.quantize, Path(work), threads=threads)
            info = {"source": source, "mode": "dynamic", "search": result.to_dict(),
                    "val_top1_agreement_vs_fp32": result.chosen.agreement}
        else:
            quantize_dynamic_int8(fp32, out)
            info = {"source": source, "mode": "dynamic", "scope": "all", "per_channel": False,
                    "val_top1_agreement_vs_fp32": val_agreement(fp32, out, run.data.val, threads)}
        info["ops"] = op_counts(out)
        return info

    # -- what the targets and the app need --------------------------------------------------------
    def preprocess(self, run) -> dict[str, Any]:
        return {"kind": "text", "tokenizer": "tokenizer.json", "max_length": run.data.max_length,
                "inputs": ["input_ids", "attention_mask"]}

    def check_inputs(self, run):
        return run.data.val.input_ids[:64], run.data.val.attention_mask[:64]

    def torch_inputs(self, run):
        """Batch 1 at the recipe's sequence length: how litert-torch converts an encoder."""
        from bench.data.tokens import at_length

        val = at_length(run.data.val, run.data.max_length)
        rows = (val.input_ids, val.attention_mask)
        return rows, rows

    def extra_files(self, run):
        tokenizer = run.data.tokenizer

        def write(target_dir: Path) -> list[Path]:
            tokenizer.save(target_dir / "tokenizer.json")
            return [target_dir / "tokenizer.json"]

        return write


ENCODER = TextEncoder()
