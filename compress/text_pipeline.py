"""The Transformer half of `compress run`: fine-tune a BERT-style encoder on labelled text, shrink it (layer
drop, head and FFN-neuron pruning, vocabulary pruning), fine-tune or distill the student from the fine-tuned
model, dynamic INT8 behind the accuracy gate, compile for ONNX Runtime and bench against the FP32 baseline on
the same runtime. Same stage cache, artifacts and report schema as the CNN pipeline.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import compress
from compress.cache import StageCache, stage_key
from common.errors import CompressError, GateFailed
from compress.pipeline import (WORKDIR_PREFIX, RunContext, _section, choose_student, export_plan, log,
                               prepare_out_dir, usable_target)
from compress.shipping import compile_stage, finish_report, onnx_candidates
from compress.recipe import Recipe

DYNAMIC_CANDIDATES = (("all", False), ("all", True), ("weights", False), ("weights", True))


@dataclass(frozen=True)
class TextData:
    """Tokenized splits (`bench.text_data.EncodedSplit`) and what identifies them for the cache."""

    name: str
    labels: tuple[str, ...]
    train: Any
    val: Any
    test: Any
    max_length: int
    fingerprint: str  # texts, labels, tokenizer and max_length

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def model_folder(recipe: Recipe) -> Path | None:
    """The Hugging Face folder a pretrained encoder comes from (None for a randomly initialised one)."""
    from models.hf import ModelFolderError, minilm_path

    m = recipe.model
    if not m.pretrained:
        return None
    try:
        return Path(m.path) if m.path else minilm_path()
    except ModelFolderError as e:
        raise CompressError(str(e)) from None


def load_text(recipe: Recipe, folder: Path | None):
    """(TextData, tokenizer): the recipe's texts, tokenized by the model's own tokenizer."""
    from bench.datasets import DatasetError
    from bench.text_data import load_fine_foods, load_text_dataset
    from models.hf import ModelFolderError, load_tokenizer, word_level_tokenizer

    d = recipe.data
    try:
        if d.dataset == "fine-foods":
            texts = load_fine_foods(d.path, val_size=d.val_size, seed=recipe.seed, limit_train=d.limit_train,
                                    limit_test=d.limit_test)
        else:
            texts = load_text_dataset("csv", Path(d.path), Path(d.test_path), d.text_column, d.label_column,
                                      val_size=d.val_size, seed=recipe.seed, limit_train=d.limit_train,
                                      limit_test=d.limit_test)
        if folder is not None:
            tokenizer = load_tokenizer(folder, max_length=d.max_length)
        else:  # a randomly initialised encoder gets a word-level vocabulary of its training texts
            tokenizer = word_level_tokenizer(sorted({w for t in texts.train.texts for w in t.lower().split()}),
                                             max_length=d.max_length)
    except (DatasetError, ModelFolderError) as e:
        raise CompressError(str(e)) from None
    train, val, test = (tokenizer.encode_split(s) for s in (texts.train, texts.val, texts.test))
    fingerprint = stage_key(texts.fingerprint, tokenizer.digest())
    return TextData(texts.name, texts.labels, train, val, test, d.max_length, fingerprint), tokenizer


def run_text(recipe: Recipe, out_dir: Path) -> dict[str, Any]:
    import torch

    from compress import distributed
    from compress import transformer_shrink as ts
    from models.hf import load_encoder, load_hf_encoder, save_encoder
    from models.transformer import EncoderConfig, build_encoder, count_parameters

    if distributed.world_size() > 1:
        raise CompressError("--nproc above 1 is not supported for Transformer recipes yet; run with --nproc 1")
    target = usable_target(recipe.target.name, "text")  # before anything is written
    out_dir = prepare_out_dir(out_dir)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    folder = model_folder(recipe)
    data, tokenizer = load_text(recipe, folder)
    log(f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test {len(data.test)} texts, "
        f"max {data.max_length} tokens ({float((data.train.lengths >= data.max_length).mean()):.1%} of training "
        f"texts cut), {data.num_classes} classes; model: {folder or 'random encoder'}")
    ctx = RunContext(recipe, out_dir, StageCache(out_dir))
    version = compress.__version__
    t = recipe.train

    def loop(epochs: float, lr: float, **kd: float) -> ts.TextLoopConfig:
        return ts.TextLoopConfig(epochs=epochs, batch_size=t.batch_size, lr=lr, weight_decay=t.weight_decay, **kd)

    def new_encoder():
        m = recipe.model
        if folder is not None:
            return load_hf_encoder(folder, num_classes=data.num_classes, pooling=m.pooling, seed=recipe.seed)
        cfg = EncoderConfig(vocab_size=tokenizer.vocab_size, hidden=m.hidden, layers=m.layers, heads=m.heads,
                            ffn=m.ffn, num_classes=data.num_classes, max_positions=max(data.max_length, 16),
                            pooling=m.pooling)
        return build_encoder(cfg, seed=recipe.seed)

    def val_accuracy(model) -> float:
        return ts.accuracy_of(ts.predict_text_logits(model, data.val), data.val.y)

    # -- fine-tune the full model: the baseline ---------------------------------------------------
    baseline_pt = out_dir / "baseline.safetensors"
    train_key = stage_key("train", version, recipe.seed, data.fingerprint, _section(recipe, "data"),
                          _section(recipe, "model"), _section(recipe, "train"))

    def do_train():
        model = new_encoder()
        curve = ts.fit_text(model, data.train, loop(t.epochs, t.lr), seed=recipe.seed, label="fine-tune")
        save_encoder(model, baseline_pt)
        return [baseline_pt], {"val_accuracy": val_accuracy(model), "loss_curve": curve,
                               "params": count_parameters(model)}

    train_rec = ctx.stage("train", train_key, do_train)
    teacher = load_encoder(baseline_pt)
    if train_rec.metrics["val_accuracy"] < 1.2 / data.num_classes:
        raise GateFailed(f"baseline reached only {train_rec.metrics['val_accuracy']:.3f} validation accuracy "
                         "(near chance); raise train.epochs or check the data")

    # -- shrink, then fine-tune without a teacher (the ablation's "pruned" row) ----------------------
    p = recipe.prune
    shrinks = p.enabled and (p.layers or p.ratio > 0 or p.heads_ratio > 0 or p.vocab)
    prune_key = stage_key("prune", version, train_key, _section(recipe, "prune"))
    raw_pt, pruned_pt = out_dir / "pruned.raw.safetensors", out_dir / "pruned.safetensors"
    prune_rec = None
    if shrinks:
        def do_prune():
            raw, info, keep_ids = shrink_encoder(teacher, p, data.train, tokenizer.special, seed=recipe.seed + 6)
            info["vocab"]["oov_token_rate"] = {name: oov_rate(split, keep_ids)
                                               for name, split in (("val", data.val), ("test", data.test))}
            info["val_accuracy_pruned"] = val_accuracy(raw)
            save_encoder(raw, raw_pt)
            curve, accuracy = [], info["val_accuracy_pruned"]
            if p.finetune_epochs > 0:
                curve = ts.fit_text(raw, data.train, loop(p.finetune_epochs, p.lr), seed=recipe.seed + 1,
                                    label="fine-tune pruned")
                accuracy = val_accuracy(raw)
            save_encoder(raw, pruned_pt)
            return [raw_pt, pruned_pt], {**info, "val_accuracy": accuracy, "loss_curve": curve}

        prune_rec = ctx.stage("prune", prune_key, do_prune)

    # -- distill the shrunk student from the fine-tuned model --------------------------------------
    student_source = raw_pt if prune_rec is not None else baseline_pt
    distill_key = stage_key("distill", version, prune_key, train_key, _section(recipe, "distill"), student_source.name)
    student_pt = out_dir / "student.safetensors"
    distill_rec = None
    if recipe.distill.enabled:
        def do_distill():
            student = load_encoder(student_source)
            before = val_accuracy(student)
            d = recipe.distill
            hidden, extra = None, {}
            train = data.train
            if d.augment:  # cropped copies of the training texts; their hard labels are the teacher's answers
                train = ts.with_rows(train, ts.crop_copies(train, d.augment, seed=recipe.seed + 5))
                extra["augmented_rows"] = len(train) - len(data.train)
            if d.feature_weight > 0:  # also match hidden states, layer by layer (student layer <- teacher layer)
                kept = prune_rec.metrics["layers_kept"] if prune_rec is not None else teacher.config.layers
                keep = list(range(kept)) if isinstance(kept, int) else kept
                targets = ts.skip_layer_targets(keep, teacher.config.layers)
                soft, hidden = ts.teacher_outputs(teacher, train, targets)
                extra["hidden_state_targets"] = {"student_layers_from": keep, "teacher_layers_taught": list(targets),
                                                 "loss": "1 - cosine", "weight": d.feature_weight}
            else:
                soft = ts.predict_text_logits(teacher, train)
            if d.augment:
                train.y[len(data.train):] = soft[len(data.train):].argmax(1)
            curve = ts.fit_text(student, train, loop(d.epochs, d.lr, temperature=d.temperature, alpha=d.alpha),
                                seed=recipe.seed + 2, teacher_logits=soft, teacher_hidden=hidden,
                                hidden_weight=d.feature_weight, label="distill")
            save_encoder(student, student_pt)
            return [student_pt], {"val_accuracy_before": before, "val_accuracy": val_accuracy(student),
                                  "loss_curve": curve, **extra}

        distill_rec = ctx.stage("distill", distill_key, do_distill)

    student_name, student_val = choose_student(prune_rec, distill_rec)
    metadata = {
        "producer": f"edge-compress {version}", "recipe": recipe.name, "dataset": data.name,
        "labels": list(data.labels),
        "preprocess": {"kind": "text", "tokenizer": "tokenizer.json", "max_length": data.max_length,
                       "inputs": ["input_ids", "attention_mask"]},
    }
    if target.SOURCE == "torch":  # mobile: litert-torch converts each checkpoint itself
        return compile_for_torch_target(ctx, target, data, tokenizer, metadata, student_name, student_val,
                                        {"baseline": baseline_pt, "pruned": pruned_pt, "distilled": student_pt},
                                        stage_key(distill_key, train_key, student_name))

    # -- export with dynamic batch and sequence axes, checked against torch -------------------------
    fp32_models, export_key, onnx_paths = export_plan(recipe, distill_key, baseline_pt,
                                                      pruned_pt if prune_rec is not None else None,
                                                      student_pt if distill_rec is not None else None)

    def do_export():
        from compress import ort_fusion

        parity = {}
        for name, pt in fp32_models.items():
            model = load_encoder(pt)
            ts.export_text_onnx(model, onnx_paths[name])
            fused = ort_fusion.fuse_encoder(onnx_paths[name], onnx_paths[name]) if recipe.target.ort_fusion else None
            parity[name] = ts.check_text_parity(model, onnx_paths[name], data.val, atol=recipe.target.parity_atol,
                                                seq_lengths=(max(8, data.max_length // 4), data.max_length)).to_dict()
            if fused is not None:
                parity[name]["fused_ops"] = fused
        return list(onnx_paths.values()), {"parity": parity}

    export_rec = ctx.stage("export", export_key, do_export)

    # -- dynamic INT8: ONNX Runtime alone on the baseline, and the gated search on the student -------------
    q = recipe.quantize
    int8_sources = {"int8": "baseline"}
    if student_name != "baseline":
        int8_sources["compressed"] = student_name
    shipped_name = "compressed" if "compressed" in int8_sources else "int8"
    quant_key = stage_key("quantize", version, export_key, _section(recipe, "quantize"), data.fingerprint,
                          student_name)
    int8_paths = {name: out_dir / f"{src}.int8.onnx" for name, src in int8_sources.items()}
    quant_rec = None
    if q.enabled:
        def do_quantize():
            import tempfile

            info = {}
            for name, src in int8_sources.items():
                if name == shipped_name:
                    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=out_dir) as work:
                        result = search_dynamic_int8(onnx_paths[src], int8_paths[name], data, q, Path(work),
                                                     threads=recipe.bench.threads)
                    info[name] = {"source": src, "mode": "dynamic", "search": result.to_dict(),
                                  "val_top1_agreement_vs_fp32": result.chosen.agreement}
                else:  # what ONNX Runtime's quantize_dynamic gives with its defaults: the comparison row
                    ts.quantize_dynamic_int8(onnx_paths[src], int8_paths[name])
                    info[name] = {"source": src, "mode": "dynamic", "scope": "all", "per_channel": False,
                                  "val_top1_agreement_vs_fp32": val_agreement(onnx_paths[src], int8_paths[name],
                                                                              data.val, recipe.bench.threads)}
                info[name]["ops"] = op_counts(int8_paths[name])
            return list(int8_paths.values()), info

        quant_rec = ctx.stage("quantize", quant_key, do_quantize)

    # -- bench every candidate; the fastest within the run's accuracy budget is compiled with its tokenizer -----
    described = {"baseline": "fine-tuned FP32 baseline", "pruned": "shrunk + fine-tuned, no teacher",
                 "distilled": "shrunk + distilled"}
    variants = onnx_candidates(onnx_paths, int8_paths if quant_rec else {}, student_name,
                               "ONNX Runtime dynamic INT8", described)
    sources = {v.name: v.path for v in variants}

    check = (data.val.input_ids[:64], data.val.attention_mask[:64])  # the target runs what it ships on these

    def ship(name: str) -> Path:
        return compile_stage(ctx, target, sources[name], metadata, upstream_key=quant_key if quant_rec else export_key,
                             data_fingerprint=data.fingerprint, check=check, write_extra=tokenizer_writer(tokenizer))

    return finish_report(ctx, data, variants, export_rec.metrics["parity"], quant_rec.metrics if quant_rec else {},
                         student_name, student_val, ship)


def compile_for_torch_target(ctx, target, data: TextData, tokenizer, metadata: dict[str, Any], student_name: str,
                             student_val: dict[str, float], checkpoints: dict[str, Path], upstream_key: str):
    """The mobile target for Transformers: FP32 and dynamic-range INT8 .tflite of the baseline and the student
    at batch 1 and the recipe's sequence length, each checked against torch on the validation texts; benched on
    LiteRT against the baseline's own FP32 .tflite."""
    from bench.text_data import at_length
    from compress.torch_compile import run_torch_target
    from models.hf import load_encoder

    val = at_length(data.val, data.max_length)  # quantize.mode is always dynamic here; the embedding stays float
    rows = (val.input_ids, val.attention_mask)
    return run_torch_target(ctx, target, data, checkpoints, load_encoder, calib=rows, check=rows, metadata=metadata,
                            upstream_key=upstream_key, student_name=student_name, student_val=student_val,
                            write_extra=tokenizer_writer(tokenizer))


def tokenizer_writer(tokenizer):
    """`write_extra` for the compile stages: the tokenizer an app needs beside the shipped graph."""
    def write(target_dir: Path) -> list[Path]:
        tokenizer.save(target_dir / "tokenizer.json")
        return [target_dir / "tokenizer.json"]

    return write


TAYLOR_ROWS = 512  # training texts the Taylor scores are summed over (a 4-layer MiniLM: ~20 s per pass on 2 cores)


def shrink_encoder(model, p, train, special, *, seed: int = 0) -> tuple[Any, dict[str, Any], np.ndarray | None]:
    """The student: evenly spaced layers, then the most important heads and FFN neurons (by weight magnitude, or
    with `prune.importance: taylor` by how much the student's match to the teacher's logits depends on them,
    each scored on the student as pruned so far), then the used vocabulary."""
    from compress import transformer_shrink as ts
    from models.transformer import count_parameters

    cfg = model.config
    student = model
    if p.layers and p.layers < cfg.layers:
        student = ts.drop_layers(student, ts.evenly_spaced_layers(cfg.layers, p.layers))
    scoring = None
    if p.importance == "taylor" and (p.heads_ratio > 0 or p.ratio > 0):
        rows = np.sort(np.random.default_rng(seed).permutation(len(train))[:TAYLOR_ROWS])
        scoring = train.take(rows, crop=False)
        teacher_logits = ts.predict_text_logits(model, scoring)

        def scores(m, which: int):
            return ts.taylor_scores(m, scoring, teacher_logits=teacher_logits)[which]
    if p.heads_ratio > 0:
        student = ts.prune_heads(student, max(1, round(cfg.heads * (1 - p.heads_ratio))),
                                 scores=scores(student, 0) if scoring is not None else None)
    if p.ratio > 0:
        student = ts.prune_ffn(student, 1 - p.ratio, round_to=p.round_to,
                               scores=scores(student, 1) if scoring is not None else None)
    keep = None
    if p.vocab:
        keep = ts.used_token_ids(train.input_ids, train.attention_mask, special.all)
        student = ts.prune_vocab(student, keep, unk_id=special.unk)
    s = student.config
    return student, {
        "params_before": count_parameters(model), "params_after": count_parameters(student),
        "layers_kept": s.layers if s.layers == cfg.layers else list(ts.evenly_spaced_layers(cfg.layers, s.layers)),
        "heads": [s.heads_of(i) for i in range(s.layers)], "ffn": [s.ffn_of(i) for i in range(s.layers)],
        "vocab": {"kept": s.vocab_size, "of": s.input_vocab_size},
        "importance": p.importance, **({"importance_rows": len(scoring)} if scoring is not None else {}),
    }, keep


def oov_rate(split, keep_ids: np.ndarray | None) -> float:
    """Share of real tokens whose id vocabulary pruning dropped (they read as [UNK])."""
    if keep_ids is None:
        return 0.0
    return float((~np.isin(split.input_ids[split.attention_mask.astype(bool)], keep_ids)).mean())


def val_agreement(fp32: Path, int8: Path, split, threads: int) -> float:
    from bench.accuracy import predict_split
    from common.compare import top1_agreement
    from runtime import load

    with load(fp32, threads=threads) as a, load(int8, threads=threads) as b:
        return top1_agreement(predict_split(a, split), predict_split(b, split))


def op_counts(path: Path) -> dict[str, Any]:
    """How many ops run in INT8 and how many MatMul/Gemm stay in float (why INT8 is or is not faster)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    int8 = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "ConvInteger", "DynamicQuantizeMatMul",
            "QAttention"}
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"int8": sum(v for k, v in ops.items() if k in int8),
            "float": ops.get("MatMul", 0) + ops.get("Gemm", 0) + ops.get("Attention", 0),
            "by_type": dict(sorted(ops.items()))}


def search_dynamic_int8(fp32_path: Path, out_path: Path, data: TextData, q, workdir: Path, *, threads: int = 2):
    """Dynamic INT8 candidates (every MatMul vs weight MatMuls only; per-tensor vs per-channel weights), each
    measured on the validation texts and timed at batch 1 and full sequence length; the fastest within
    `q.max_accuracy_drop` of FP32 ships. A candidate that collapsed (onnxruntime issue 9599: predictions drift
    to one class) misses the bar by its accuracy. None within the bar: the most accurate is saved, the table
    printed, and SearchFailed raised.
    """
    from bench.accuracy import latency_feeds, predict_split
    from common.compare import top1_agreement
    from compress import transformer_shrink as ts
    from compress.search import Candidate, SearchFailed, SearchResult, _copy, choose, format_table, latencies
    from runtime import load

    def val_logits(path: Path) -> np.ndarray:
        with load(path, threads=threads) as runner:
            return predict_split(runner, data.val)

    reference = val_logits(fp32_path)
    fp32_acc = ts.accuracy_of(reference, data.val.y)
    scopes = DYNAMIC_CANDIDATES if q.search else (("all", q.per_channel),)
    candidates, paths = [], {}
    for scope, per_channel in scopes:
        name = f"dynamic-{scope}" + ("-pc" if per_channel else "")
        paths[name] = workdir / f"{name}.onnx"
        ts.quantize_dynamic_int8(fp32_path, paths[name], scope=scope, per_channel=per_channel)
        logits = val_logits(paths[name])
        acc = ts.accuracy_of(logits, data.val.y)
        drop = 100.0 * (fp32_acc - acc)
        candidates.append(Candidate(name, "dynamic", (), str(paths[name]), acc, round(drop, 4),
                                    top1_agreement(reference, logits),
                                    meets_bar=drop <= q.max_accuracy_drop + 1e-9))
        log(f"  {name}: val {acc:.4f} (FP32 {fp32_acc:.4f}), agreement {candidates[-1].agreement:.4f}")
    feeds = latency_feeds(data.test, 1, "input_ids", data.max_length)
    p50 = latencies(paths, lambda runner: feeds, 1, threads)
    candidates = [dataclasses.replace(c, p50_ms=round(p50[c.name], 4)) for c in candidates]
    chosen = choose(candidates)
    _copy(Path(chosen.path), out_path)
    result = SearchResult(chosen, tuple(candidates), (), fp32_acc)
    if not chosen.meets_bar:
        print(format_table(result), file=sys.stderr)
        raise SearchFailed(result,
            f"no dynamic INT8 candidate stayed within quantize.max_accuracy_drop={q.max_accuracy_drop} pt of FP32 "
            f"({fp32_acc:.4f} on validation); the most accurate ({chosen.name}, drop {chosen.accuracy_drop_pt:.2f} "
            f"pt) is saved as {out_path}")
    return result
