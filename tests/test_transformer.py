"""The Transformer path on a tiny random BERT and a toy sentiment set: seconds, with numeric assertions."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bench.data.splits import TextSplit
from bench.data.tokens import EncodedSplit
from compress.families.encoder import shrink as es
from compress.families.encoder import export as tx
from compress.families.encoder import quantize as tq
from compress.families.encoder import training as tt
from compress.families.encoder.hf_adapters import load_checkpoint, save_checkpoint
from common.compare import top1_agreement
from common.errors import CompressError
from models.hf import word_level_tokenizer
from models.transformer import EncoderConfig, build_encoder, count_parameters

GOOD = ["great", "delicious", "love", "perfect", "tasty", "excellent"]
BAD = ["awful", "stale", "hate", "bland", "broken", "terrible"]
FILLER = ["the", "coffee", "tea", "bag", "arrived", "box", "was", "this", "snack", "flavor", "it", "really"]
RARE = ["zesty", "gritty"]  # in the tokenizer's vocabulary but never in the toy training texts


def _texts(n: int, seed: int) -> TextSplit:
    """Label 1 iff the review holds a word from GOOD (else one from BAD), among 4-20 filler words."""
    rng = np.random.default_rng(seed)
    texts, y = [], []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 21))))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(GOOD if label else BAD)))
        texts.append(" ".join(words))
        y.append(label)
    return TextSplit(tuple(texts), np.array(y, dtype=np.int64))


TOKENIZER = word_level_tokenizer(GOOD + BAD + FILLER + RARE, max_length=32)
TINY = EncoderConfig(vocab_size=TOKENIZER.vocab_size, hidden=32, layers=2, heads=4, ffn=64, max_positions=128,
                     dropout=0.0)


@pytest.fixture(scope="module")
def data() -> tuple[EncodedSplit, EncodedSplit]:
    return TOKENIZER.encode_split(_texts(512, 0)), TOKENIZER.encode_split(_texts(128, 1))


@pytest.fixture(scope="module")
def trained(data) -> torch.nn.Module:
    train, _ = data
    model = build_encoder(TINY, seed=0)
    losses = tt.fit_text(model, train, tt.TextLoopConfig(epochs=10, batch_size=32, lr=3e-3, warmup=0.1), seed=0)
    assert losses[-1] < 0.5 * losses[0], losses
    return model


def test_tokenizer_pads_masks_and_truncates():
    ids, mask = TOKENIZER.encode(["great coffee", "the " * 100], pad_to="longest")
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == (2, 32)  # truncated to max_length
    assert mask[0].sum() == 4 and mask[1].sum() == 32  # [CLS] great coffee [SEP]
    assert (ids[0, 4:] == TOKENIZER.special.pad).all()
    ids, _ = TOKENIZER.encode(["great"], pad_to="longest")
    assert ids.shape == (1, 3)


def test_fine_tune_beats_chance_by_far(trained, data):
    _, test = data
    acc = tt.accuracy_of(tt.predict_text_logits(trained, test), test.y)
    assert acc >= 0.9, acc


def test_the_encoder_trains_under_bf16_in_the_shared_loop(data):
    """train.precision bf16 reaches the encoder through the one training loop: bf16 autocast where the CPU computes it
    natively, float32 elsewhere; either way the loss falls and the model learns (accuracy bar as the fp32 fixture's,
    loosened by 5 pt for bf16's 8-bit mantissa)."""
    train, test = data
    model = build_encoder(TINY, seed=0)
    losses = tt.fit_text(model, train, tt.TextLoopConfig(epochs=10, batch_size=32, lr=3e-3, warmup=0.1,
                                                         precision="bf16"), seed=0)
    assert losses[-1] < 0.5 * losses[0], losses
    assert tt.accuracy_of(tt.predict_text_logits(model, test), test.y) >= 0.85


def test_padding_does_not_change_logits(trained, data):
    _, test = data
    short = tt.predict_text_logits(trained, test)  # each batch padded to its own longest row
    with torch.no_grad():
        full = trained(torch.from_numpy(test.input_ids), torch.from_numpy(test.attention_mask)).numpy()
    assert np.abs(short - full).max() <= 1e-5


def test_layer_drop_copies_teacher_weights_exactly(trained):
    keep = es.evenly_spaced_layers(2, 1)
    assert keep == (0,) and es.evenly_spaced_layers(6, 3) == (0, 2, 4) and es.evenly_spaced_layers(6, 2) == (0, 3)
    student = es.drop_layers(trained, (1,))
    assert student.config.layers == 1 and len(student.encoder.layer) == 1
    t, s = trained.state_dict(), student.state_dict()
    for key, value in s.items():
        source = key.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, t[source]), key
    assert len(trained.encoder.layer) == 2  # the teacher is untouched


def test_ffn_and_head_pruning_shrink_and_keep_the_largest(trained, data):
    _, test = data
    pruned = es.prune_ffn(trained, 0.5, round_to=8)
    assert pruned.config.layer_ffn == (32, 32)
    assert [l.intermediate.dense.out_features for l in pruned.encoder.layer] == [32, 32]
    kept_scores = es.ffn_neuron_scores(pruned)[0]
    assert torch.allclose(kept_scores.sort().values, es.ffn_neuron_scores(trained)[0].sort().values[-32:])
    heads = es.prune_heads(pruned, [2, 3])
    assert heads.config.layer_heads == (2, 3)
    assert heads.encoder.layer[0].attention.self.query.out_features == 2 * TINY.head_dim
    assert count_parameters(heads) < count_parameters(pruned) < count_parameters(trained)
    # keeping everything is the identity
    same = es.prune_heads(es.prune_ffn(trained, 1.0, round_to=8), 4)
    assert np.abs(tt.predict_text_logits(same, test) - tt.predict_text_logits(trained, test)).max() <= 1e-5
    # and the pruned model round-trips through a checkpoint with its per-layer widths
    with pytest.raises(CompressError, match="choose 1..4"):
        es.prune_heads(trained, 5)


def _loss_when_scaled(model, row, linear, column_idx, eps: float) -> float:
    """Cross-entropy of `row` with `linear`'s input columns `column_idx` scaled by 1 + eps (a head's context or
    one FFN neuron's output, seen through the layer that reads it)."""
    m = copy.deepcopy(model)
    layer = m.get_submodule(linear)
    with torch.no_grad():
        layer.weight[:, column_idx] *= 1.0 + eps
        logits = m(torch.from_numpy(row.input_ids), torch.from_numpy(row.attention_mask))
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(row.y), reduction="sum"))


def test_taylor_scores_are_the_loss_derivatives_they_claim(trained, data):
    """Each score is sum over rows of |dL/d(scale of that head / neuron)|; checked by central differences in
    float64 (relative tolerance 1e-4) on two rows, each differentiated on its own."""
    train, _ = data
    model = copy.deepcopy(trained).double()
    two = train.take(np.array([0, 1]))
    two = EncodedSplit(two.input_ids, two.attention_mask, 1 - two.y)  # wrong labels: a loss far from 0
    rows = [two.take(np.array([i])) for i in (0, 1)]
    heads, ffn = es.taylor_scores(model, two)
    d, eps = TINY.head_dim, 1e-5
    for layer in range(TINY.layers):
        for h in range(TINY.heads):
            cols = torch.arange(h * d, (h + 1) * d)
            fd = sum(abs(_loss_when_scaled(model, r, f"encoder.layer.{layer}.attention.output.dense", cols, eps)
                         - _loss_when_scaled(model, r, f"encoder.layer.{layer}.attention.output.dense", cols, -eps))
                     / (2 * eps) for r in rows)
            assert fd > 1e-5 and float(heads[layer][h]) == pytest.approx(fd, rel=1e-4), (layer, h)
        for j in (0, 17, 63):
            name = f"encoder.layer.{layer}.output.dense"
            fd = sum(abs(_loss_when_scaled(model, r, name, [j], eps) - _loss_when_scaled(model, r, name, [j], -eps))
                     / (2 * eps) for r in rows)
            assert fd > 1e-7 and float(ffn[layer][j]) == pytest.approx(fd, rel=1e-4), (layer, j)


def test_taylor_pruning_drops_what_the_output_cannot_see(trained, data):
    """A head or FFN neuron whose output weights are zero changes nothing: Taylor scores it 0, so pruning by Taylor
    removes it and leaves the logits as they were (max abs difference <= 1e-4), where magnitude pruning keeps it
    for its large input weights and removes a head that mattered."""
    train, test = data
    model = es.drop_layers(trained, (0,))  # one layer, so that both prunings touch only the doctored layer
    layer = model.encoder.layer[0]
    d = TINY.head_dim
    with torch.no_grad():
        layer.attention.output.dense.weight[:, d:2 * d] = 0.0  # head 1 is invisible ...
        layer.attention.self.value.weight[d:2 * d] *= 50.0    # ... but the largest by weight norm
        layer.output.dense.weight[:, :8] = 0.0                  # FFN neurons 0-7 are invisible ...
        layer.intermediate.dense.weight[:8] *= 50.0             # ... but the largest by weight norm
    heads, ffn = es.taylor_scores(model, train, teacher_logits=tt.predict_text_logits(model, train))
    assert float(heads[0][1]) == 0.0 and float(heads[0].max()) > 0
    assert float(ffn[0][:8].abs().max()) == 0.0 and float(ffn[0][8:].min()) > 0
    full = tt.predict_text_logits(model, test)
    by_taylor = es.prune_ffn(es.prune_heads(model, 3, scores=heads), 0.875, round_to=8, scores=ffn)
    assert by_taylor.config.layer_heads == (3,) and by_taylor.config.layer_ffn == (56,)
    assert np.abs(tt.predict_text_logits(by_taylor, test) - full).max() <= 1e-4
    assert 1 in es.head_scores(model)[0].topk(3).indices.tolist()
    by_magnitude = es.prune_ffn(es.prune_heads(model, 3), 0.875, round_to=8)
    assert np.abs(tt.predict_text_logits(by_magnitude, test) - full).max() > 1e-2


def test_checkpoint_round_trip_keeps_pruned_shapes(trained, data, tmp_path):
    _, test = data
    model = es.prune_vocab(es.prune_heads(es.prune_ffn(trained, 0.5, round_to=8), 2),
                           np.arange(20), unk_id=TOKENIZER.special.unk)
    back = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    assert back.config == model.config
    assert np.abs(tt.predict_text_logits(back, test) - tt.predict_text_logits(model, test)).max() == 0.0


def test_vocab_pruning_is_exact_on_in_vocab_text(trained, data):
    train, test = data
    keep = es.used_token_ids(train.input_ids, train.attention_mask, TOKENIZER.special.all)
    assert len(keep) < TINY.vocab_size  # RARE words dropped
    pruned = es.prune_vocab(trained, keep, unk_id=TOKENIZER.special.unk)
    assert pruned.embeddings.word_embeddings.num_embeddings == len(keep)
    assert pruned.config.input_vocab_size == TINY.vocab_size
    diff = np.abs(tt.predict_text_logits(pruned, test) - tt.predict_text_logits(trained, test)).max()
    assert diff <= 1e-5, diff
    # a dropped token reads as [UNK], exactly as if the tokenizer had produced [UNK]
    ids, mask = TOKENIZER.encode(["zesty coffee"])
    unk_ids = ids.copy()
    unk_ids[0, 1] = TOKENIZER.special.unk
    with torch.no_grad():
        a = pruned(torch.from_numpy(ids), torch.from_numpy(mask))
        b = trained(torch.from_numpy(unk_ids), torch.from_numpy(mask))
    assert torch.allclose(a, b, atol=1e-5)


def test_onnx_parity_at_two_batches_and_two_lengths_then_int8(trained, data, tmp_path):
    train, test = data
    keep = es.used_token_ids(train.input_ids, train.attention_mask, TOKENIZER.special.all)
    model = es.prune_vocab(trained, keep, unk_id=TOKENIZER.special.unk)
    fp32 = tmp_path / "fp32.onnx"
    tx.export_text_onnx(model, fp32)
    parity = tx.check_text_parity(model, fp32, test, atol=1e-4, batch_sizes=(1, 4), seq_lengths=(16, 64))
    assert parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0
    assert parity.samples == 2 * (8 + 8)
    import onnx

    graph = onnx.load(str(fp32)).graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims), dims  # batch and seq symbolic
    ref = _onnx_logits(fp32, test)
    for scope in tq.INT8_SCOPES:
        q = tmp_path / f"int8-{scope}.onnx"
        tq.quantize_dynamic_int8(fp32, q, scope=scope)
        ops = {n.op_type for n in onnx.load(str(q)).graph.node}
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
        int8 = _onnx_logits(q, test)
        majority_share = np.bincount(int8.argmax(1)).max() / len(int8)  # a collapse drifts to one class
        assert top1_agreement(ref, int8) >= 0.95 and majority_share < 0.8


def _onnx_logits(path, split):
    """Logits of the ONNX file at `path` on `split`, through the runtime an app uses."""
    from bench.accuracy import predict_split
    from runtime import load

    with load(path) as runner:
        return predict_split(runner, split)


def test_onnxruntime_fusion_fuses_every_attention_and_keeps_parity(trained, data, tmp_path):
    """A pruned student (3 and 2 heads) fuses per layer; the fused graph matches torch on padded batches, and its
    dynamic INT8 runs the attention as QAttention and agrees with the fused FP32."""
    import onnx

    from compress.families.encoder import ort_fusion

    train, test = data
    student = es.prune_heads(trained, [3, 2])
    assert student.config.layer_heads == (3, 2)
    raw, fused = tmp_path / "raw.onnx", tmp_path / "fused.onnx"
    tx.export_text_onnx(student, raw)
    counts = ort_fusion.fuse_encoder(raw, fused)
    assert counts["Attention"] == TINY.layers and counts["SkipLayerNormalization"] == 0, counts
    assert counts["LayerNormalization"] == 2 * TINY.layers + 1, counts  # embeddings + two per layer
    assert "Softmax" not in {n.op_type for n in onnx.load(str(fused)).graph.node}
    parity = tx.check_text_parity(student, fused, test, atol=1e-4, batch_sizes=(1, 4), seq_lengths=(16, 64))
    assert parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0
    ref = _onnx_logits(fused, test)
    for scope in tq.INT8_SCOPES:
        q = tmp_path / f"fused-int8-{scope}.onnx"
        tq.quantize_dynamic_int8(fused, q, scope=scope, per_channel=True)
        ops = {n.op_type for n in onnx.load(str(q)).graph.node}
        assert "QAttention" in ops and "Attention" not in ops, ops
        assert top1_agreement(ref, _onnx_logits(q, test)) >= 0.95


def test_cpu_sessions_keep_residual_add_and_layernorm_apart(trained, tmp_path):
    """ORT would re-fuse Add + LayerNormalization into its slow CPU SkipLayerNormalization when loading; the
    optimizer name `runtime` disables must still exist in the installed ORT (an unknown name is ignored silently)."""
    import onnx
    import onnxruntime as ort

    from compress.families.encoder import ort_fusion
    from runtime.onnx_backend import CPU_DISABLED_OPTIMIZERS

    raw, fused = tmp_path / "raw.onnx", tmp_path / "fused.onnx"
    tx.export_text_onnx(trained, raw)
    ort_fusion.fuse_encoder(raw, fused)

    def optimized_ops(disabled):
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(fused), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]

    assert optimized_ops([]).count("SkipLayerNormalization") == 2 * TINY.layers
    assert "SkipLayerNormalization" not in optimized_ops(list(CPU_DISABLED_OPTIMIZERS))


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden=30, heads=4), "not a multiple of heads 4; try heads="),
    (dict(pooling="max"), "pooling 'max' unknown; known: mean, cls"),
    (dict(layer_ffn=(8,)), "layer_ffn has 1 entries for 2 layers"),
])
def test_bad_encoder_configs_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TINY.with_(**kwargs)


def test_bad_shrink_arguments_name_the_fix(trained):
    with pytest.raises(CompressError, match="cannot keep 7 of 6 layers"):
        es.evenly_spaced_layers(6, 7)
    with pytest.raises(CompressError, match="distinct indices in 0..1"):
        es.drop_layers(trained, (0, 0))
    with pytest.raises(CompressError, match="keep ratio must lie in"):
        es.prune_ffn(trained, 0.0)
    with pytest.raises(CompressError, match="lower the learning rate|positive"):
        tt.TextLoopConfig(lr=0)


def test_the_int8_search_refuses_a_model_whose_outlier_features_collapse_int8(trained, data, tmp_path, capsys):
    """onnxruntime issue 9599's mechanism: a few huge activation channels set the per-tensor INT8 scale and
    every other channel rounds to zero. Scaling head 0's value rows by 1000 and the output projection's
    matching columns by 1/1000 leaves the FP32 function unchanged but collapses every dynamic INT8 candidate;
    the search must save the most accurate one, print its table and raise, never ship it silently."""
    import copy

    from compress.recipe import QuantConfig
    from compress.quantization.candidates import SearchFailed
    from compress.families.encoder.family import TextData
    from compress.families.encoder.quantize import search_dynamic_int8

    _, test = data
    model = copy.deepcopy(trained)
    d = TINY.head_dim
    with torch.no_grad():
        for layer in model.encoder.layer:
            value, out = layer.attention.self.value, layer.attention.output.dense
            value.weight[:d] *= 1000.0
            value.bias[:d] *= 1000.0
            out.weight[:, :d] /= 1000.0
    assert np.abs(tt.predict_text_logits(model, test) - tt.predict_text_logits(trained, test)).max() <= 1e-4
    fp32 = tmp_path / "outliers.onnx"
    tx.export_text_onnx(model, fp32)
    texts = TextData("toy", ("bad", "good"), test, test, test, 32, "toy")
    cfg = QuantConfig(mode="dynamic", max_accuracy_drop=1.0)
    with pytest.raises(SearchFailed, match="no dynamic INT8 candidate stayed within") as failed:
        search_dynamic_int8(fp32, tmp_path / "out.int8.onnx", texts, cfg, tmp_path)
    result = failed.value.result
    assert result.fp32_val_accuracy >= 0.95
    assert len(result.candidates) == 4 and not any(c.meets_bar for c in result.candidates)
    assert all(c.val_accuracy <= 0.8 for c in result.candidates)  # near chance on a separable set
    assert (tmp_path / "out.int8.onnx").is_file()
    assert "dynamic-all" in capsys.readouterr().err


def test_hidden_state_distillation_teaches_the_skipped_layers(trained, data):
    """Student layer i (teacher layer 2i) learns teacher layer 2i+1's output: the cosine loss falls with training
    and the student stays accurate."""
    train, test = data
    assert tt.skip_layer_targets((0, 2, 4), 6) == (1, 3, 5)
    assert tt.skip_layer_targets((0, 1), 2) == (0, 1)  # no layer dropped: every layer matches itself
    student = es.drop_layers(trained, (0,))
    targets = tt.skip_layer_targets((0,), TINY.layers)
    assert targets == (1,)
    soft, hidden = tt.teacher_outputs(trained, train, targets)
    assert np.abs(soft - tt.predict_text_logits(trained, train)).max() <= 1e-5
    assert all(len(r) == n for r, n in zip(hidden.rows, train.lengths))

    def mean_hidden_loss(model) -> float:
        b = train.take(np.arange(128))
        ids, mask = torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask)
        with torch.no_grad():
            _, h = model.forward_with_hidden(ids, mask)
            return tt.hidden_loss(h, hidden.batch(np.arange(128), ids.shape[1]), mask).item()

    identical = trained.forward_with_hidden(torch.from_numpy(test.input_ids), torch.from_numpy(test.attention_mask))
    assert tt.hidden_loss(identical[1][1:], torch.stack([identical[1][1]], dim=2),
                          torch.from_numpy(test.attention_mask)).item() <= 1e-6
    before = mean_hidden_loss(student)
    tt.fit_text(student, train, tt.TextLoopConfig(epochs=3, batch_size=32, lr=3e-3, temperature=2.0, alpha=0.5),
                seed=1, teacher_logits=soft, teacher_hidden=hidden, hidden_weight=1.0)
    assert mean_hidden_loss(student) < 0.5 * before
    assert tt.accuracy_of(tt.predict_text_logits(student, test), test.y) >= 0.9


def test_crop_copies_are_contiguous_spans_between_cls_and_sep():
    rng = np.random.default_rng(0)
    lengths = np.array([2, 3, 12, 30, 30])
    ids = np.zeros((5, 32), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = np.concatenate([[101], rng.integers(1000, 2000, n - 2), [102]])
        mask[i, :n] = 1
    data = EncodedSplit(ids, mask, np.array([0, 1, 0, 1, 1]))
    crops = tt.crop_copies(data, 3, seed=1)
    assert crops.input_ids.shape == (15, 32) and list(crops.y) == [0, 1, 0, 1, 1] * 3
    for row in range(15):
        src, n = row % 5, int(crops.attention_mask[row].sum())
        got = crops.input_ids[row, :n]
        assert (crops.input_ids[row, n:] == 0).all() and (crops.attention_mask[row, :n] == 1).all()
        assert got[0] == 101 and got[-1] == 102
        inner, source = list(got[1:-1]), list(ids[src, 1 : lengths[src] - 1])
        if len(source) < 2:
            assert inner == source
            continue
        assert 0.3 * len(source) <= len(inner) <= 0.95 * len(source), (row, len(inner), len(source))
        starts = [k for k in range(len(source)) if source[k : k + len(inner)] == inner]
        assert starts, f"row {row} is not a contiguous span of its source"
    assert len({tuple(crops.input_ids[r]) for r in (3, 8, 13)}) == 3  # copies differ


def test_split_unsqueezes_gives_the_same_tensor_in_single_axis_steps():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from compress.families.encoder.ort_fusion import split_unsqueezes

    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    neg = numpy_helper.from_array(np.array([-1, 0], dtype=np.int64), "neg")  # not ascending non-negative: kept
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name=""),
         helper.make_node("Unsqueeze", ["x", "neg"], ["z"], name="")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 1, 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 3, 1])], [axes, neg])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert split_unsqueezes(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Unsqueeze"] * 3
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert after[0].shape == (2, 1, 1, 3) and np.array_equal(after[0], before[0])
    assert np.array_equal(after[1], before[1])
