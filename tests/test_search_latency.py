"""INT8 that is measured, not assumed: any input name, op types kept in float, ties to plain PTQ, unlabelled data.

Correctness only: the latency probe runs, but no test asserts which variant is faster."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from compress.quantization.static import QDQ_OPS, op_precision, quantize_static_qdq
from compress.recipe import QuantConfig


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class _HardSwishNet(nn.Module):
    """A MobileNetV3-like block: conv, HardSwish, depthwise conv, squeeze-excite (Mul, Sigmoid), residual Add."""

    def __init__(self, c: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.stem, self.act = nn.Conv2d(3, c, 3, padding=1), nn.Hardswish()
        self.dw, self.se, self.pw = nn.Conv2d(c, c, 3, padding=1, groups=c), _SE(c), nn.Conv2d(c, c, 1)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        y = self.act(self.stem(x))
        y = y + self.pw(self.se(self.act(self.dw(y))))
        return self.head(y.mean((2, 3)))


def _export(model: nn.Module, path, input_name: str, size: int = 16) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    program = torch.onnx.export(model.eval(), (x,), dynamo=True, input_names=[input_name], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), opset_version=17,
                                verbose=False)
    program.save(str(path))


@pytest.fixture(scope="module")
def hardswish_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hs") / "hardswish.onnx"
    _export(_HardSwishNet(), path, "pixel_values")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    val = rng.standard_normal((40, 3, 16, 16)).astype(np.float32)
    return path, calib, val


def _logits(path, x):
    from runtime.measure import predict
    from runtime import load

    with load(path) as runner:
        return predict(runner, x)


def test_input_name_is_read_from_the_graph(hardswish_onnx, tmp_path):
    from compress.quantization.static import model_input_name

    path, calib, val = hardswish_onnx
    assert model_input_name(path) == "pixel_values"
    out = tmp_path / "int8.onnx"
    quantize_static_qdq(path, out, calib, QuantConfig())  # no input_name: the calibration reader feeds pixel_values
    assert op_precision(out)["qdq_nodes"]["QuantizeLinear"] > 0
    ref, got = _logits(path, val), _logits(out, val)
    assert got.shape == (40, 5) and np.isfinite(got).all()
    from common.compare import sqnr_db

    assert sqnr_db(ref, got) >= 15.0  # a random-weight model: INT8 logits still track FP32 (measured ~30 dB)


def _qdq_on_edges(path, op_type: str) -> int:
    """Q/DQ nodes directly feeding or fed by the nodes of `op_type`."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    count = 0
    for n in graph.node:
        if n.op_type == op_type:
            count += sum(producer.get(i) in QDQ_OPS for i in n.input)
            count += sum(c in QDQ_OPS for o in n.output for c in consumers.get(o, []))
    return count


def _qdq_on_hardswish_muls(path) -> int:
    import onnx

    from compress.quantization.static import hardswish_pairs

    graph = onnx.load(str(path)).graph
    nodes = list(graph.node)
    producer = {o: n.op_type for n in nodes for o in n.output}
    consumers = Counter(i for n in nodes if n.op_type in QDQ_OPS for i in n.input)
    muls = [nodes[m] for m in hardswish_pairs(graph).values()]
    if not muls:  # plain PTQ: Q/DQ between the HardSigmoid and its Mul hide the pair; find the Muls by their names
        muls = [n for n in nodes if n.op_type == "Mul" and n.name.startswith("Mul_pre_")]
    return sum(producer.get(i) in QDQ_OPS for m in muls for i in m.input) + sum(consumers[m.output[0]] for m in muls)


def test_float_op_types_are_left_without_qdq(hardswish_onnx, tmp_path):
    from compress.quantization.latency import op_groups

    path, calib, _ = hardswish_onnx
    plain, hs, ew = tmp_path / "plain.onnx", tmp_path / "hs.onnx", tmp_path / "ew.onnx"
    cfg = QuantConfig()
    quantize_static_qdq(path, plain, calib, cfg)
    quantize_static_qdq(path, hs, calib, cfg, float_op_types=("HardSwish",))
    quantize_static_qdq(path, ew, calib, cfg, float_op_types=("Add", "Mul"))
    # the pre-pass splits HardSwish into x * HardSigmoid(x); onnxruntime quantizes the Mul but not the HardSigmoid,
    # so plain PTQ puts Q/DQ on every edge of both (float work in between)
    assert _qdq_on_edges(plain, "HardSigmoid") >= 4 and _qdq_on_edges(plain, "Mul") >= 3
    assert _qdq_on_edges(hs, "HardSigmoid") == 0  # kept float: the nodes touching its tensors stay float too
    assert _qdq_on_hardswish_muls(plain) >= 4 and _qdq_on_hardswish_muls(hs) == 0
    assert Counter(op_precision(hs)["int8"]).get("Conv", 0) < Counter(op_precision(plain)["int8"])["Conv"]
    # Add and Mul are quantized by plain PTQ (QLinearAdd/QLinearMul), kept float when named
    assert {"Add", "Mul"} <= set(op_precision(plain)["int8"])
    assert not {"Add", "Mul"} & set(op_precision(ew)["int8"]) and {"Add", "Mul"} <= set(op_precision(ew)["float"])
    assert Counter(op_precision(ew)["int8"])["Conv"] == Counter(op_precision(plain)["int8"])["Conv"]
    from compress.quantization.static import preprocess_for_quantization

    preprocess_for_quantization(path, tmp_path / "pre.onnx")
    groups = op_groups(tmp_path / "pre.onnx", plain)
    assert groups["hardswish"] == ("HardSwish",) and groups["depthwise-conv"] == ("DepthwiseConv",)
    assert {"Add", "Mul", "Sigmoid"} <= set(groups["elementwise"]) and "Conv" not in groups["elementwise"]
    dw = tmp_path / "dw.onnx"
    quantize_static_qdq(path, dw, calib, cfg, float_op_types=("DepthwiseConv",))
    assert _int8_weight_convs(dw) == _int8_weight_convs(plain) - 1 == 4  # the one depthwise Conv keeps float weights


def _int8_weight_convs(path) -> int:
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return sum(n.op_type == "Conv" and producer.get(n.input[1]) == "DequantizeLinear" for n in graph.node)


def test_choose_prefers_plain_ptq_on_ties():
    from compress.quantization.candidates import Candidate, choose

    def cand(name, acc, p50, changes, ok=True, op_types=()):
        return Candidate(name, "minmax", (), "", acc, 0.0, acc, p50, ok, float_op_types=op_types, changes=changes)

    plain = cand("ptq-minmax", 0.90, 0.100, 0)
    mixed = cand("float-elementwise", 0.905, 0.095, 1, op_types=("Add",))
    assert choose([plain, mixed], rows=100) is plain  # half a row apart, 5 % apart: a tie, the plain one ships
    assert choose([plain, mixed], rows=1000) is mixed  # 5 rows more accurate at the same speed
    fast = cand("act-int8", 0.895, 0.050, 1)
    assert choose([plain, mixed, fast], rows=100) is fast  # 2x faster within the bar beats plain
    assert choose([plain, cand("x", 0.99, 0.01, 1, ok=False)], rows=100) is plain  # never one that misses the bar


def test_unlabelled_search_judges_by_agreement_with_fp32(hardswish_onnx, tmp_path, capsys):
    from common.compare import sqnr_db, top1_agreement
    from compress.quantization.search import search_int8

    path, calib, val = hardswish_onnx
    out = tmp_path / "int8.onnx"
    cfg = QuantConfig(max_accuracy_drop=100.0, max_fallback_layers=0, qat_epochs=0)
    result = search_int8(path, out, calib, val, None, cfg, tmp_path / "work")  # positional, as image.py calls it
    assert "only 40 validation rows" in capsys.readouterr().err
    ref = _logits(path, val)
    d = result.to_dict()
    assert d["judged_by"] == "fp32 agreement" and d["val_rows"] == 40 and d["fp32_val_accuracy"] == 1.0
    for cand in result.candidates:
        logits = _logits(cand.path, val)
        agreement = top1_agreement(ref, logits)
        assert cand.val_accuracy == pytest.approx(agreement) and cand.agreement == pytest.approx(agreement)
        assert cand.accuracy_drop_pt == pytest.approx(100 * (1 - agreement), abs=1e-3)
        assert cand.sqnr_db == pytest.approx(sqnr_db(ref, logits), abs=0.01)
    names = [c.name for c in result.candidates]
    assert names[:3] == ["ptq-minmax", "ptq-entropy", "ptq-percentile"]
    assert {"act-int8", "float-hardswish", "float-elementwise", "float-depthwise-conv"} <= set(names)
    probe = {r["variant"]: r for r in d["latency_probe"]}
    assert probe["float-hardswish"]["float_op_types"] == ["HardSwish"] and probe["act-int8"]["p50_ms"] > 0
    assert all(r["reason"] for r in d["latency_probe"])
    assert set(d["float_op_types"]) == set(result.chosen.float_op_types) and out.is_file()
    import json

    json.dumps(d)  # report.json-ready


def test_latency_probe_off_keeps_the_recipes_flavour(hardswish_onnx, tmp_path):
    from compress.quantization.search import search_int8

    path, calib, val = hardswish_onnx
    cfg = QuantConfig(max_accuracy_drop=100.0, latency_search=False, activation_type="int8")
    result = search_int8(path, tmp_path / "int8.onnx", calib, val, None, cfg, tmp_path / "work")
    assert result.latency_probe == () and {c.activation_type for c in result.candidates} == {"int8"}


def test_min_sqnr_is_part_of_the_bar(hardswish_onnx, tmp_path):
    from compress.quantization.candidates import SearchFailed
    from compress.quantization.search import search_int8

    path, calib, val = hardswish_onnx
    # agreement alone would pass everything (100 pt); no INT8 file reaches 200 dB (float32 rounding alone stays
    # below ~140 dB)
    cfg = QuantConfig(max_accuracy_drop=100.0, min_sqnr_db=200.0, max_fallback_layers=1, qat_epochs=0)
    with pytest.raises(SearchFailed, match=r"with logit SQNR >= quantize.min_sqnr_db=200 dB") as failed:
        search_int8(path, tmp_path / "int8.onnx", calib, val, None, cfg, tmp_path / "work")
    assert not any(c.meets_bar for c in failed.value.result.candidates)
    passing = search_int8(path, tmp_path / "ok.onnx", calib, val, None, QuantConfig(max_accuracy_drop=100.0,
                          min_sqnr_db=1.0, latency_search=False), tmp_path / "work2")
    assert passing.chosen.meets_bar and passing.chosen.sqnr_db >= 1.0


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_cached_ranges_give_the_same_int8_files(hardswish_onnx, tmp_path, calibration):
    """The search quantizes one graph many ways (a layer alone, layers excluded, op types float) from ranges it
    calibrated once: each file equals the one calibrated afresh, and one cache entry serves a calibration method."""
    import onnx

    from compress.quantization.static import preprocess_for_quantization, quantizable_nodes

    path, calib, _ = hardswish_onnx
    pre, cache = tmp_path / "pre.onnx", tmp_path / "ranges"
    preprocess_for_quantization(path, pre)
    cfg = QuantConfig(calibration=calibration)
    first = quantizable_nodes(pre)[0][0]
    variants = {"alone": {"only_nodes": (first,)}, "excluded": {"exclude_nodes": (first,)}, "plain": {}}
    for name, kwargs in variants.items():
        fresh, cached = tmp_path / f"{name}.onnx", tmp_path / f"{name}.cached.onnx"
        quantize_static_qdq(pre, fresh, calib, cfg, preprocessed=True, **kwargs)
        quantize_static_qdq(pre, cached, calib, cfg, preprocessed=True, ranges_cache=cache, **kwargs)
        assert onnx.load(str(fresh)).graph == onnx.load(str(cached)).graph, name
    assert len(list(cache.glob("*.json"))) == 1
    # another calibration set or other float op types: other ranges, another entry
    quantize_static_qdq(pre, tmp_path / "b.onnx", calib[:16], cfg, preprocessed=True, ranges_cache=cache)
    quantize_static_qdq(pre, tmp_path / "c.onnx", calib, cfg, preprocessed=True, ranges_cache=cache,
                        float_op_types=("Add", "Mul"))
    assert len(list(cache.glob("*.json"))) == 3
    other = tmp_path / "other.onnx"  # another graph, the same rows and settings
    _export(_HardSwishNet(c=8), other, "pixel_values")
    quantize_static_qdq(other, tmp_path / "d.onnx", calib, cfg, ranges_cache=cache)
    assert len(list(cache.glob("*.json"))) == 4
