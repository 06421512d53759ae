"""`compress bench` on small ONNX models built here, the HTML report, and bench + check end to end."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compress.cli.main import main

FEATURES, CLASSES = 64, 10
FAST = dict(runs=60, warmup=5, rounds=3, batch_sizes=(32,), threads=2)


def mlp(path: Path, hidden: int, *, pad_to: int | None = None, seed: int = 0) -> Path:
    """x[N, 64] -> MatMul/Add/Relu x2 -> logits[N, 10]. `pad_to` zero-pads the hidden width: identical outputs,
    several times the work (the shape of a pruning that removed nothing, or a regression the gate must catch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((FEATURES, hidden)).astype(np.float32) / 8
    b1 = rng.standard_normal(hidden).astype(np.float32) / 8
    w2 = rng.standard_normal((hidden, hidden)).astype(np.float32) / np.sqrt(hidden)
    w3 = rng.standard_normal((hidden, CLASSES)).astype(np.float32) / np.sqrt(hidden)
    if pad_to:
        extra = pad_to - hidden
        w1, b1 = np.pad(w1, ((0, 0), (0, extra))), np.pad(b1, (0, extra))
        w2, w3 = np.pad(w2, ((0, extra), (0, extra))), np.pad(w3, ((0, extra), (0, 0)))
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))]
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]), helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
             helper.make_node("Relu", ["h4"], ["h5"]), helper.make_node("MatMul", ["h5", "w3"], ["logits"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", FEATURES])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"big": mlp(d / "big.onnx", 768, seed=1), "small": mlp(d / "small.onnx", 96),
            "padded": mlp(d / "padded.onnx", 96, pad_to=768)}


def test_padded_model_computes_the_same_function(models):
    import runtime

    x = np.random.default_rng(0).standard_normal((8, FEATURES)).astype(np.float32)
    with runtime.load(models["small"]) as a, runtime.load(models["padded"]) as b:
        ya, yb = a.infer(x)["logits"], b.infer(x)["logits"]
    np.testing.assert_allclose(ya, yb, rtol=1e-4, atol=1e-5)


def test_bench_report_has_the_pipeline_schema(models):
    from bench.standalone import bench_artifacts

    report = bench_artifacts([("baseline", models["big"]), ("compressed", models["small"])], **FAST)
    assert report["schema_version"] == 1
    names = [v["name"] for v in report["variants"]]
    assert names == ["baseline", "compressed"]
    for v in report["variants"]:
        assert {"name", "artifact", "precision", "accuracy", "size_bytes", "latency_ms",
                "top1_agreement_vs_baseline"} <= set(v)
        s = v["latency_ms"]["32"]
        assert {"p50", "p90", "p99", "mean", "p50_ci95", "p50_repeat_pi95", "block_p50", "runs", "throughput"} <= set(s)
        assert s["p50_ci95"][0] <= s["p50"] <= s["p50_ci95"][1] and s["runs"] == 60
        assert s["p50_repeat_pi95"][0] <= s["p50_ci95"][0] and s["p50_repeat_pi95"][1] >= s["p50_ci95"][1]
        m = v["memory_mib"]["32"]
        assert 0 < m["before_load_mib"] < m["peak_rss_mib"]
        assert v["accuracy"] is None and v["precision"] == "fp32"
        assert "discordant_vs_baseline" not in v  # random inputs have no right answers
    c = report["comparison"]
    assert c["baseline"] == "baseline" and c["candidate"] == "compressed" and c["accuracy_drop_pt"] is None
    assert "accuracy_drop_ci95_pt" not in c
    assert c["size_ratio"] > 30  # 768-wide vs 96-wide weights
    assert report["environment"]["threads"] == 2 and "onnxruntime" in report["environment"]["versions"]


def test_peak_rss_counts_the_weights_the_runtime_holds(models, tmp_path):
    """A 64 MB weight matrix must show in the child's peak RSS; a 40 KB model must not come near it."""
    from runtime.memory import measure_peak_rss

    fat = mlp(tmp_path / "fat.onnx", 4096)  # w2 alone: 4096 x 4096 float32 = 64 MiB
    x = {"input": np.zeros((32, FEATURES), np.float32)}
    grown = {name: (lambda m: m["peak_rss_mib"] - m["before_load_mib"])(measure_peak_rss(path, x, threads=2))
             for name, path in (("fat", fat), ("small", models["small"]))}
    assert grown["fat"] >= 64, grown
    assert grown["small"] < grown["fat"] - 48, grown


def test_peak_rss_probe_ignores_a_runtime_package_in_the_working_directory(models, tmp_path, monkeypatch):
    from runtime.memory import measure_peak_rss

    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "__init__.py").write_text("raise ImportError('the wrong runtime')\n")
    monkeypatch.chdir(tmp_path)
    measured = measure_peak_rss(models["small"], {"input": np.zeros((4, FEATURES), np.float32)}, threads=1)
    assert measured is not None and measured["peak_rss_mib"] > 0


def test_bench_cli_writes_json_md_html_and_check_reads_it(models, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", f"baseline={models['big']}", f"compressed={models['small']}",
                                       "--batch", "1,32", "--runs", "40", "--warmup", "3", "--rounds", "2",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.html"}
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"][0]["latency_ms"]) == {"1", "32"}
    assert "| compressed | fp32 |" in (out / "report.md").read_text()
    same = CliRunner().invoke(main, ["check", "--report", str(out / "report.json"), "--baseline",
                                     str(out / "report.json")], catch_exceptions=False)
    assert same.exit_code == 0, same.output


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["/nonexistent/model.onnx"], r"artifact /nonexistent/model.onnx does not exist"),
        (["BIG", "--baseline", "nope"], r"--baseline 'nope' is not one of the artifacts: big"),
        (["BIG", "--batch", "0"], r"--batch '0' must list positive batch sizes"),
        (["BIG", "--data", "/nonexistent/fm"], r"data path /nonexistent/fm is not a directory"),
        (["NOTONNX"], r"is not an ONNX model"),
    ],
)
def test_bench_bad_input_is_one_line(models, tmp_path, args, pattern):
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello")
    args = [str(models["big"]) if a == "BIG" else str(junk) if a == "NOTONNX" else a for a in args]
    result = CliRunner().invoke(main, ["bench", *args, "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and re.search(pattern, text), text


def test_bench_does_not_import_torch(models, tmp_path):
    code = (
        "import sys\n"
        "from bench.standalone import bench_artifacts, write_all\n"
        f"r = bench_artifacts([('baseline', {str(models['big'])!r}), ('compressed', {str(models['small'])!r})], "
        "runs=6, warmup=1, rounds=2, batch_sizes=(4,))\n"
        f"write_all(r, {str(tmp_path)!r})\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
    assert (tmp_path / "report.html").exists()


def test_slower_artifact_is_caught_and_the_same_artifact_passes(models, tmp_path):
    """bench + check end to end: the same artifacts benched twice pass; a candidate that lost its speed-up
    (same function, zero-padded to the baseline's width) fails, in ratio mode and in absolute mode."""
    from bench.gate import check_reports
    from bench.standalone import bench_artifacts

    def bench(candidate: str) -> dict:
        return bench_artifacts([("baseline", models["big"]), ("compressed", models[candidate])], **FAST)

    # The default bar (10 %) is for real models on a quiet box; here the candidate runs in ~50 us, where a shared
    # 2-core CI box has shown +22 % with 3 rounds. A 50 % bar still sits far below the 10x regression planted here.
    bar = dict(max_latency_regression=50.0)
    first, again, slow = bench("small"), bench("small"), bench("padded")
    same = check_reports(again, first, **bar)
    assert same.passed, [c.note for c in same.checks]
    for mode in ("ratio", "absolute"):
        result = check_reports(slow, first, mode=mode, **bar)
        assert not result.passed, (mode, [c.note for c in result.checks])
    ratio = slow["comparison"]["speedup_p50"]["32"] / first["comparison"]["speedup_p50"]["32"]
    assert ratio < 0.5, ratio  # the padded model is at least twice as slow relative to the baseline


def test_html_is_self_contained_with_plots(models):
    from bench.html import pareto_front, to_html
    from bench.standalone import bench_artifacts

    report = bench_artifacts([("baseline", models["big"]), ("compressed", models["small"])], **FAST)
    for v, acc in zip(report["variants"], (0.91, 0.90)):
        v["accuracy"] = acc
    report["stages"] = [{"name": "train", "cached": True, "wall_s": 7.4}, {"name": "bench", "cached": False,
                                                                             "wall_s": 2.0}]
    page = to_html(report)
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 3
    assert "http" not in page and "<script" not in page and "src=" not in page  # nothing fetched
    assert "Accuracy vs latency, batch 32" in page and "Artifact size" in page
    assert re.search(r"<td[^>]*>train</td><td[^>]*>yes</td><td[^>]*>7.4</td>", page)
    assert pareto_front([(1.0, 0.9), (0.5, 0.8), (2.0, 0.85), (0.5, 0.8)]) == [True, True, False, True]
