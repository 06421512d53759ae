"""Hugging Face folders of other encoder types (issue 20): tiny random BERT, DistilBERT and RoBERTa folders, written
offline with `transformers` and a `tokenizers` tokenizer trained on the toy texts, read into the reference encoder
(checked against transformers' own forward), then run through the whole text pipeline with numeric checks; a
decoder folder is refused in one line."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.test_transformer import BAD, FILLER, GOOD, _texts

pytest.importorskip("transformers", reason="transformers writes the tiny folders")
KINDS = ("bert", "distilbert", "roberta")
SHAPE = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64}


def _train_texts() -> list[str]:
    return list(_texts(200, 7).texts) + [" ".join(GOOD + BAD + FILLER)]


def _tokenizer(kind: str):
    """A `PreTrainedTokenizerFast` over a tokenizer trained here: WordPiece ([CLS] .. [SEP]) or byte-level BPE
    (<s> .. </s>, RoBERTa's)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(_train_texts(), trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                       cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_train_texts(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def write_folder(path, kind: str, *, labels: tuple[str, ...] | None = None, seed: int = 0):
    """A tiny random `kind` folder (config.json, model.safetensors, tokenizer.json); with `labels`, a
    *ForSequenceClassification one whose head has those classes, else the bare encoder."""
    import torch
    import transformers as tf

    tokenizer = _tokenizer(kind)
    common = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if labels:
        common.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if kind == "distilbert":
        config = tf.DistilBertConfig(dim=SHAPE["hidden"], n_layers=SHAPE["layers"], n_heads=SHAPE["heads"],
                                     hidden_dim=SHAPE["ffn"], max_position_embeddings=64, **common)
    else:
        extra = {"max_position_embeddings": 66, "type_vocab_size": 1} if kind == "roberta" else {
            "max_position_embeddings": 64}
        config = (tf.RobertaConfig if kind == "roberta" else tf.BertConfig)(
            hidden_size=SHAPE["hidden"], num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
            intermediate_size=SHAPE["ffn"], **extra, **common)
    name = {"bert": "Bert", "distilbert": "DistilBert", "roberta": "Roberta"}[kind]
    cls = getattr(tf, f"{name}ForSequenceClassification" if labels else f"{name}Model")
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return model, tokenizer


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-folders")
    return {kind: (root / kind, *write_folder(root / kind, kind, labels=("neg", "pos"))) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_reads_into_the_reference_encoder_with_transformers_logits(folders, kind):
    """Pretrained head kept: logits equal transformers' own model's (max abs diff <= 1e-5) on padded batches."""
    import torch

    from compress.families.encoder.hf_adapters import folder_tokenizer, load_folder_model, read_folder

    folder, reference, _ = folders[kind]
    spec = read_folder(folder)
    assert spec.model_type == kind and spec.head_labels == ("neg", "pos")
    model = load_folder_model(spec, num_classes=2, pooling="mean")
    tok = folder_tokenizer(spec, max_length=24)
    ids, mask = tok.encode(list(_texts(16, 3).texts))
    assert (mask == 0).any()  # the batch has padding: RoBERTa's positions and the pad id matter there
    with torch.no_grad():
        ours = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        theirs = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    assert np.abs(ours - theirs).max() <= 1e-5, np.abs(ours - theirs).max()
    fresh = load_folder_model(spec, num_classes=3, pooling="mean")  # head of another size: a fresh one
    assert fresh.classifier.out_features == 3 and not hasattr(fresh, "head_activation")


def test_labels_line_up_with_a_kept_head():
    from compress.families.encoder.hf_adapters import head_label_order

    assert head_label_order(("neg", "pos"), ("NEG", "POS")) == (("neg", "pos"), None)
    assert head_label_order(("neg", "pos"), ("pos", "neg")) == (("pos", "neg"), [1, 0])
    assert head_label_order(("0", "1"), ("negative", "positive")) == (("negative", "positive"), None)
    assert head_label_order(("a", "b"), ("x", "y")) == (("a", "b"), None)


def _write_csv(path, split, names=("neg", "pos")) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "sentiment"])
        for text, y in zip(split.texts, split.y):
            writer.writerow([text, names[y]])


def _recipe(tmp_path, folder, **overrides):
    from compress.recipe import recipe_from_dict

    _write_csv(tmp_path / "train.csv", _texts(300, 0))
    _write_csv(tmp_path / "test.csv", _texts(100, 1))
    spec = {
        "name": "hf-folder",
        "data": {"dataset": "csv", "path": str(tmp_path / "train.csv"), "test_path": str(tmp_path / "test.csv"),
                 "text_column": "text", "label_column": "sentiment", "max_length": 24, "val_size": 60},
        "model": {"arch": "bert", "path": str(folder)},
        "train": {"epochs": 6, "batch_size": 32, "lr": 0.003},
        "prune": {"layers": 1, "heads_ratio": 0.5, "ratio": 0.5, "round_to": 16, "vocab": True,
                  "finetune_epochs": 2, "lr": 0.003},
        "distill": {"epochs": 2, "lr": 0.003, "temperature": 2.0, "alpha": 0.5},
        "quantize": {"mode": "dynamic", "max_accuracy_drop": 5.0},
        "bench": {"batch_sizes": [1], "runs": 3, "rounds": 1, "warmup": 1},
        "target": {"litert_candidates": False},
        "budget": {"max_accuracy_drop": 10.0, "latency_batch": 1},
    }
    for section, values in overrides.items():
        spec[section] = {**spec.get(section, {}), **values}
    return recipe_from_dict(spec)


# what each type's run exercises: BERT as a bare encoder (like MiniLM: fresh head, mean pooling; no distillation,
# which tests/test_text_pipeline.py runs on the same reference encoder: one ONNX export fewer); DistilBERT with a
# pretrained head whose classes come in the other order than the data's (kept, classes lined up) and
# hidden-state distillation; RoBERTa with a 3-class head for 2-class data (a fresh head, said in one line)
HEADS = {"bert": None, "distilbert": ("pos", "neg"), "roberta": ("a", "b", "c")}
OVERRIDES = {"bert": {"distill": {"enabled": False}},
             # a random head on first-token pooling (the kept one) needs larger steps than mean pooling
             "distilbert": {"train": {"lr": 0.01}, "distill": {"feature_weight": 0.5}},
             "roberta": {}}


@pytest.fixture(scope="module", params=KINDS)
def folder_run(request, tmp_path_factory):
    import contextlib
    import io

    from compress.pipeline import run

    kind = request.param
    tmp = tmp_path_factory.mktemp(f"run-{kind}")
    write_folder(tmp / "folder", kind, labels=HEADS[kind])
    recipe = _recipe(tmp, tmp / "folder", **OVERRIDES[kind])
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        report = run(recipe, tmp / "out")
    return kind, report, tmp, log.getvalue()


def test_each_folder_type_fine_tunes_shrinks_distills_exports_and_quantizes(folder_run):
    kind, report, _, log = folder_run
    acc = {v["name"]: v["accuracy"] for v in report["variants"]}
    students = {"pruned"} if kind == "bert" else {"pruned", "distilled"}
    assert {"baseline", "int8", "compressed"} | students <= set(acc), acc
    assert acc["baseline"] >= 0.75, (kind, acc)  # 100 test rows of a separable set; chance is ~0.5
    # every FP32 export equals its torch model: max abs diff of the logits <= 1e-4, top-1 agreement 1.0
    for name, parity in report["parity"].items():
        assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0, (kind, name, parity)
        assert parity["fused_ops"]["Attention"] == (2 if name == "baseline" else 1), (kind, name, parity)
    prune = next(s for s in report["stages"] if s["name"] == "prune")["metrics"]
    assert prune["layers_kept"] == [0] and prune["heads"] == [1] and prune["ffn"] == [32], prune
    assert prune["params_after"] < prune["params_before"] / 2, prune
    assert prune["vocab"]["kept"] < prune["vocab"]["of"] and prune["vocab"]["oov_token_rate"]["test"] < 0.05
    if kind == "distilbert":
        distill = next(s for s in report["stages"] if s["name"] == "distill")["metrics"]
        assert distill["hidden_state_targets"]["teacher_layers_taught"] == [1], distill
    search = report["quantize"]["compressed"]["search"]
    assert next(c for c in search["candidates"] if c["name"] == search["chosen"])["meets_bar"], search
    head = {"bert": None, "distilbert": "keeping the distilbert folder's pretrained 2-class head",
            "roberta": "head has 3 classes, the data have 2; using a fresh 2-class head"}[kind]
    assert head is None or sum(head in line for line in log.splitlines()) == 1, log[-2000:]
    assert "Traceback" not in log


def test_the_shipped_model_reads_its_tokenizer_and_gives_the_reported_test_accuracy(folder_run):
    """runtime.load + encode_texts on the test CSV (the tokenizer beside the artifact) = the report's accuracy."""
    from runtime import load

    kind, report, tmp, _ = folder_run
    bundle = tmp / "out" / "target" / "cpu"
    meta = json.loads((bundle / "model.onnx.meta.json").read_text())
    labels = ["pos", "neg"] if kind == "distilbert" else ["neg", "pos"]  # a kept head's class order
    assert meta["labels"] == labels and meta["preprocess"]["tokenizer"] == "tokenizer.json"
    with open(tmp / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with load(bundle / "model.onnx") as runner:
        feeds = runner.encode_texts([r["text"] for r in rows])
        assert feeds["input_ids"].shape[1] <= 24  # cut to data.max_length by the stored tokenizer
        predicted = runner._labels(runner.first_output(feeds))
    accuracy = float(np.mean([p == r["sentiment"] for p, r in zip(predicted, rows)]))
    shipped = next(v for v in report["variants"] if v["name"] == report["budget"]["shipped"])
    assert accuracy == pytest.approx(shipped["accuracy"], abs=1e-9), (kind, accuracy, shipped)


@pytest.mark.parametrize("config, pattern", [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2},
     r"model_type 'gpt2' \(GPT2LMHeadModel\) is a text generator, not an encoder to classify with"),
    ({"model_type": "vit", "architectures": ["ViTModel"]}, r"model_type 'vit' has no sequence-classification encoder"),
    ({"model_type": "bert", "hidden_act": "relu"}, r"bert with hidden_act 'relu' .* is not supported"),
])
def test_an_unsupported_folder_is_refused_in_one_line_before_any_work(tmp_path, config, pattern):
    from tests.test_cli import _assert_one_line_error, invoke

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    _write_csv(tmp_path / "train.csv", _texts(20, 0))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {{dataset: csv, path: {tmp_path / 'train.csv'}, test_path: {tmp_path / 'train.csv'}, "
                      f"text_column: text, label_column: sentiment}}\nmodel: {{arch: bert, path: {folder}}}\n"
                      "quantize: {mode: dynamic}\n")
    result = invoke("run", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    _assert_one_line_error(result, pattern)
    assert not (tmp_path / "out").exists()


def test_texts_longer_than_the_folders_positions_are_refused_in_one_line(folders, tmp_path):
    from tests.test_cli import _assert_one_line_error, invoke

    folder = folders["roberta"][0]  # 66 position rows, less RoBERTa's offset of padding_idx + 1: 64 positions
    _write_csv(tmp_path / "train.csv", _texts(20, 0))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {{dataset: csv, path: {tmp_path / 'train.csv'}, test_path: {tmp_path / 'train.csv'}, "
                      f"text_column: text, label_column: sentiment, max_length: 65, val_size: 5}}\n"
                      f"model: {{arch: bert, path: {folder}}}\nquantize: {{mode: dynamic}}\n")
    result = invoke("run", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    _assert_one_line_error(result, r"data.max_length 65 exceeds the roberta model's 64 positions")
