"""An `.onnx` file as the model and `.npz` arrays as data: the post-training path (as given -> static INT8 ->
compiled), refusals of graphs it cannot compress in one line, and `compress bench` on .npz data and on given
inputs. Tiny models exported here with torch.onnx.export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compress.cli.main import main

SHAPE, CLASSES, ROWS = (3, 16, 16), 12, 600
BENCH = ["--runs", "6", "--rounds", "2", "--warmup", "1", "--batch", "1,4"]


def _export(module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> Path:
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, opset_version=17,
                          dynamic_axes={n: {0: "batch"} for n in inputs + outputs}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small CNN (3x16x16 -> 12 classes, input `pixel_values`) and rows labelled by it, 10 % of the labels
    changed so that accuracy is not trivially 1."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, CLASSES))
    folder = tmp_path_factory.mktemp("onnx-cnn")
    x = np.random.default_rng(0).standard_normal((ROWS, *SHAPE)).astype(np.float32)
    with torch.no_grad():  # centre the logits: every class is some row's top-1
        model[-1].bias -= model(torch.from_numpy(x)).mean(0)
    path = _export(model, (torch.from_numpy(x[:2]),), folder / "cnn.onnx", ["pixel_values"], ["logits"])
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    flip = np.random.default_rng(1).random(ROWS) < 0.1
    y[flip] = (y[flip] + 1) % CLASSES
    return path, x, y.astype(np.int64)


@pytest.fixture(scope="module")
def gru(tmp_path_factory) -> Path:
    """A stateful GRU cell: inputs x and h, outputs y and h_new."""
    import torch
    from torch import nn

    class Cell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell, self.head = nn.GRUCell(8, 16), nn.Linear(16, 4)

        def forward(self, x, h):
            h_new = self.cell(x, h)
            return self.head(h_new), h_new

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx-gru")
    return _export(Cell(), (torch.zeros(2, 8), torch.zeros(2, 16)), folder / "gru.onnx", ["x", "h"], ["y", "h_new"])


def _recipe(model: Path, data: Path, **sections):
    from compress.recipe import recipe_from_dict

    spec = {"name": "onnx-npz",
            "data": {"dataset": "npz", "path": str(data), "val_size": 100, "calib_size": 64},
            "model": {"arch": "onnx", "path": str(model)},
            "quantize": {"search": False, "max_accuracy_drop": 5.0, "fp32_if_faster": False},
            "bench": {"batch_sizes": [1, 8], "runs": 10, "rounds": 1, "warmup": 2},
            "budget": {"max_accuracy_drop": 5.0, "allow_baseline": True},
            "target": {"litert_candidates": False}, **sections}
    return recipe_from_dict(spec)


def test_an_onnx_model_on_npz_ships_int8_with_the_accuracy_it_reports(cnn, tmp_path, capsys):
    from common.compare import sqnr_db, top1_agreement
    from compress import data as data_sources
    from compress.pipeline import run
    from runtime import load, sidecar_path

    model, x, y = cnn
    npz = tmp_path / "rows.npz"
    np.savez(npz, x=x, y=y)
    recipe = _recipe(model, npz)
    report = run(recipe, tmp_path / "out")
    log = capsys.readouterr().err

    stages = [s["name"] for s in report["stages"]]
    assert "prune" not in stages and "distill" not in stages, stages
    assert "[prune] skipped: an ONNX model has no torch graph to prune" in log
    assert "[distill] skipped: an ONNX model has no torch graph to distil" in log
    assert "[train] the ONNX model is taken as given" in log
    assert report["parity"]["baseline"]["max_abs_diff"] == 0.0
    acc = {v["name"]: v["accuracy"] for v in report["variants"]}
    assert acc["baseline"] == pytest.approx(0.9, abs=0.06), acc  # 10 % of the labels were flipped

    # what shipped runs through runtime/ with the accuracy the report gives it (exactly: the same rows, same file)
    shipped = next(v for v in report["variants"] if v["name"] == "compressed")
    # the fastest within the budget: INT8, or FP32 when a net this small runs faster that way
    assert shipped["precision"] in ("int8", "fp32") and shipped["shipped_from"] in acc
    from compress.plugins import choose, learns_from_data

    test = data_sources.get("npz").load(recipe, learns_from_data(recipe, choose(recipe).family)).test
    artifact = tmp_path / "out" / shipped["artifact"]
    with load(artifact) as runner:
        assert runner.inputs[0].name == "pixel_values"
        logits = next(iter(runner.infer(test.x).values()))
    assert float((logits.argmax(1) == test.y).mean()) == pytest.approx(shipped["accuracy"], abs=1e-12)

    # the INT8 candidate against the FP32 model on the test rows: top-1 agreement >= 0.9, logit SQNR >= 15 dB
    int8 = next(v for v in report["variants"] if v["name"] == "int8")
    assert int8["precision"] == "int8"
    with load(model) as fp32, load(tmp_path / "out" / int8["artifact"]) as quantized:
        reference, got = (next(iter(r.infer(test.x).values())) for r in (fp32, quantized))
    assert top1_agreement(reference, got) >= 0.9
    assert sqnr_db(reference, got) >= 15.0
    assert float((got.argmax(1) == test.y).mean()) == pytest.approx(int8["accuracy"], abs=1e-12)
    sidecar = json.loads(sidecar_path(artifact).read_text())
    assert sidecar["labels"] == [f"class {i}" for i in range(CLASSES)] and sidecar["preprocess"] == {}


def test_bad_npz_files_are_one_line_errors(tmp_path):
    from bench.data.arrays import read_npz
    from bench.data.splits import DatasetError

    cases = {"no-x": {"z": np.zeros((4, 2))}, "strings": {"x": np.array([["a", "b"]] * 4)},
             "short-y": {"x": np.zeros((4, 2)), "y": np.zeros(3, dtype=np.int64)},
             "nan": {"x": np.array([[0.0, np.nan]] * 4)}}
    words = {"no-x": "no array named `x`", "strings": "numeric", "short-y": "one label per row",
             "nan": "NaN or Inf in 4 of 4 rows"}
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DatasetError, match=words[name]) as e:
            read_npz(tmp_path / f"{name}.npz")
        assert "\n" not in str(e.value)


def test_few_rows_split_proportionally_and_unlabelled_rows_have_no_y(cnn, tmp_path):
    """An ONNX model is taken as given: only calibration rows are kept back from the held-out ones (at most half)."""
    from compress.data.arrays import NPZ
    from compress.plugins import choose, learns_from_data

    np.savez(tmp_path / "few.npz", x=cnn[1][:50])
    recipe = _recipe(cnn[0], tmp_path / "few.npz")
    assert not learns_from_data(recipe, choose(recipe).family)  # an ONNX model learns nothing from the rows
    data = NPZ.load(recipe, learns=False)
    assert (len(data.train.x), len(data.val.x), len(data.test.x)) == (25, 13, 12)
    assert np.array_equal(data.calib.x, data.train.x)
    assert data.val.y is None and data.labels == () and not data.labelled


def _write_recipe(path: Path, model: Path, data: Path) -> Path:
    path.write_text(f"name: refused\nmodel:\n  arch: onnx\n  path: {model}\n"
                    f"data:\n  dataset: npz\n  path: {data}\n")
    return path


def test_a_stateful_two_input_model_is_refused_in_one_line_and_bench_times_it(gru, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rows.npz", x=rng.standard_normal((40, 8)).astype(np.float32),
             y=rng.integers(0, 4, 40))
    recipe = _write_recipe(tmp_path / "r.yaml", gru, tmp_path / "rows.npz")
    result = CliRunner().invoke(main, ["run", "--recipe", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: gru.onnx has 2 inputs (x, h): ")
    assert "single-input classifiers" in lines[0] and "compress bench gru.onnx --inputs inputs.npz" in lines[0]

    np.savez(tmp_path / "inputs.npz", x=rng.standard_normal((3, 8)).astype(np.float32),
             h=np.zeros((3, 16), np.float32))
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", str(gru), "--inputs", str(tmp_path / "inputs.npz"), *BENCH,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"][0]["latency_ms"]) == {"1", "4"} and report["variants"][0]["accuracy"] is None


def test_graphs_this_path_cannot_compress_are_refused_with_the_reason(tmp_path):
    import torch
    from torch import nn

    from common.errors import CompressError
    from compress.families.onnx_model.family import graph_info

    seg = _export(nn.Conv2d(3, 5, 1), (torch.zeros(2, 3, 8, 8),), tmp_path / "seg.onnx", ["image"], ["mask"])
    with pytest.raises(CompressError, match=r"output 'mask' has rank 4 \(\[N, 5, 8, 8\]\), not N x classes"):
        graph_info(seg)
    ids = _export(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)),
                  (torch.zeros(2, 3, dtype=torch.long),), tmp_path / "ids.onnx", ["input_ids"], ["logits"])
    with pytest.raises(CompressError, match="input 'input_ids' is int64, not float32"):
        graph_info(ids)

    import onnx
    from onnx import TensorProto, helper

    def branch(op: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{op}_y", TensorProto.FLOAT, ["N", 4])
        return helper.make_graph([helper.make_node(op, ["x"], [f"{op}_y"])], op, [], [out])

    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Cast", ["s"], ["c"], to=9),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("Identity"), else_branch=branch("Neg"))]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph), tmp_path / "if.onnx")
    with pytest.raises(CompressError, match=r"if.onnx holds control flow \(If nodes\)"):
        graph_info(tmp_path / "if.onnx")


def test_bench_on_unlabelled_npz_reports_agreement_with_the_first_artifact(cnn, tmp_path):
    from compress.quantization.static import quantize_static_qdq
    from compress.recipe import QuantConfig

    model, x, _ = cnn
    int8 = tmp_path / "cnn.int8.onnx"
    quantize_static_qdq(model, int8, x[:64], QuantConfig())
    np.savez(tmp_path / "unlabelled.npz", x=x[:200])
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", str(model), str(int8), "--data", str(tmp_path / "unlabelled.npz"),
                                       *BENCH, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy_metric"] == "top1_agreement_vs_baseline" and report["dataset"]["samples"] == 200
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["cnn"]["accuracy"] == 1.0 and rows["cnn"]["logit_sqnr_db_vs_baseline"] is None  # identical: +inf
    assert rows["cnn.int8"]["accuracy"] == pytest.approx(rows["cnn.int8"]["top1_agreement_vs_baseline"], abs=1e-12)
    assert rows["cnn.int8"]["accuracy"] >= 0.9 and rows["cnn.int8"]["logit_sqnr_db_vs_baseline"] >= 15.0
    assert "| variant | precision | agreement |" in (out / "report.md").read_text()
