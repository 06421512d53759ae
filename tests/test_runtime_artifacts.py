"""Bad artifacts are errors, not crashes: missing, empty, truncated, corrupt, bit-flipped and wrong-format files
raise the runtime's own ArtifactError with a one-line message, mostly before native code sees them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime import ArtifactError
from runtime.onnx_check import CorruptModel, check_onnx_bytes
from tests.test_runtime_helpers import small_cnn

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return small_cnn(tmp_path_factory.mktemp("art") / "good.onnx")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _raises_one_line(path: Path, match: str, **options) -> str:
    with pytest.raises(ArtifactError, match=match) as info:
        runtime.load(path, **options)
    message = str(info.value)
    assert "\n" not in message and str(path.name) in message
    return message


def _model_bytes(mutate) -> bytes:
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as d:
        model = onnx.load(str(small_cnn(Path(d) / "m.onnx")))
    mutate(model)
    return model.SerializeToString()


# -- table of bad files --------------------------------------------------------------------------------------------
def test_missing_directory_and_empty(tmp_path):
    _raises_one_line(tmp_path / "nope.onnx", "does not exist")
    (tmp_path / "dir.onnx").mkdir()
    _raises_one_line(tmp_path / "dir.onnx", "is not a file")
    _raises_one_line(_write(tmp_path / "empty.onnx", b""), r"is empty \(0 bytes\)")
    _raises_one_line(_write(tmp_path / "empty.tflite", b""), r"is empty \(0 bytes\)")


@pytest.mark.parametrize("name, data, match", [
    ("model.pt", b"PK\x03\x04whatever", r"unknown type '\.pt'; this runtime reads \.onnx, \.tflite"),
    ("model", b"\x08\x07", r"unknown type '\(no suffix\)'"),
    ("text.onnx", b"hello, I am not a model\n", "not an ONNX model: it looks like a text file"),
    ("json.onnx", b'{"ir_version": 8}', "it looks like a text file"),
    ("image.onnx", b"\x89PNG\r\n\x1a\n" + bytes(64), "it looks like an image"),
    ("ckpt.onnx", b"PK\x03\x04" + bytes(64), r"a zip archive \(a PyTorch checkpoint\? export it to ONNX first\)"),
    ("pickle.onnx", b"\x80\x04\x95" + bytes(64), "a Python pickle"),
    ("lite.onnx", b"\x1c\x00\x00\x00TFL3" + bytes(64), r"a TFLite model \(use the \.tflite suffix\)"),
    ("noise.onnx", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not a valid ONNX model"),
    ("zeros.onnx", bytes(100), r"not a valid ONNX model .*field number 0"),
    ("varint.onnx", b"\x08" + b"\xff" * 20, r"not a valid ONNX model .*(varint longer|truncated)"),
    ("header.onnx", b"\x08\x08", "no graph"),
    ("x.tflite", b"\x08\x08" + bytes(64), "not a valid TFLite model: no TFL3 file identifier"),
    ("short.tflite", b"\x1c\x00\x00\x00TFL3", r"too short \(8 bytes\)"),
    ("root.tflite", b"\xf0\xff\x00\x00TFL3" + bytes(16), "root table offset 65520 lies outside the file"),
])
def test_wrong_format_files(tmp_path, name, data, match):
    _raises_one_line(_write(tmp_path / name, data), match)


@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_onnx(tmp_path, good, fraction):
    data = good.read_bytes()
    cut = max(1, int(len(data) * fraction))
    _raises_one_line(_write(tmp_path / "cut.onnx", data[:cut]), r"not a valid ONNX model \(corrupt or truncated\?\)")


def test_truncated_tflite(tmp_path):
    pytest.importorskip("flatbuffers", reason="flatbuffers (comes with ai-edge-litert) builds the test model")
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert ships the TFLite schema module")
    from tests.test_runtime_helpers import tflite_dense

    data = tflite_dense(tmp_path / "d.tflite", np.ones((3, 4), np.float32), np.zeros(3, np.float32)).read_bytes()
    _raises_one_line(_write(tmp_path / "cut.tflite", data[:12]), "too short")
    _raises_one_line(_write(tmp_path / "cut2.tflite", data[:20]), "lies outside the file|runs past the end")


def _set_dims(model):
    model.graph.initializer[0].dims[3] = 4  # conv_w [4,1,3,3] -> [4,1,3,4], raw data unchanged


def _drop_op_type(model):
    model.graph.node[0].op_type = ""


def _negative_dim(model):
    model.graph.initializer[0].dims[0] = -2


def _unknown_op(model):
    model.graph.node[1].op_type = "NoSuchOp"


def _dangling_input(model):
    model.graph.node[1].input[0] = "nowhere"


@pytest.mark.parametrize("mutate, match", [
    (_set_dims, r"tensor 'conv_w' holds 144 bytes but its dims \[4, 1, 3, 4\] need 192"),
    (_drop_op_type, "a node has no op_type"),
    (_negative_dim, r"tensor 'conv_w' has a negative dimension \[-2, 1, 3, 3\]"),
    (_unknown_op, "cannot be loaded by ONNX Runtime: .*NoSuchOp"),
    (_dangling_input, "cannot be loaded by ONNX Runtime"),
])
def test_well_framed_but_broken_models(tmp_path, mutate, match):
    _raises_one_line(_write(tmp_path / "broken.onnx", _model_bytes(mutate)), match)


def test_invalid_utf8_name_is_refused_in_python(tmp_path, good):
    data = good.read_bytes()
    at = data.index(b"conv_w")
    data = data[:at] + b"\xc3\x28nv_w" + data[at + 6:]  # same length, invalid UTF-8
    _raises_one_line(_write(tmp_path / "utf8.onnx", data), "is not valid UTF-8")


# -- the pure-Python check accepts real models ------------------------------------------------------------------------
def test_check_accepts_subgraphs_and_external_data(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    then = helper.make_graph([helper.make_node("Identity", ["x"], ["y_then"])], "then", [],
                             [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "if",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "if.onnx"))
    info = check_onnx_bytes((tmp_path / "if.onnx").read_bytes())
    assert info["ir_version"] == 8 and info["opsets"] == {"": 17} and not info["external_data"]
    with runtime.load(tmp_path / "if.onnx") as r:
        out = r.infer({"cond": np.array(False), "x": np.array([1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(out["y"], [-1.0, -2.0])

    # weights in a file beside the model: the check notes it and the runner loads from the path
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert check_onnx_bytes((tmp_path / "ext.onnx").read_bytes())["external_data"]
    with runtime.load(tmp_path / "ext.onnx") as r:
        x = np.ones((1, 64), np.float32)
        np.testing.assert_allclose(r.infer(x)["y"], x @ np.arange(4096, dtype=np.float32).reshape(64, 64))


def test_check_on_the_wire_format():
    with pytest.raises(CorruptModel, match="empty"):
        check_onnx_bytes(b"")
    with pytest.raises(CorruptModel, match="wire type 7"):
        check_onnx_bytes(b"\x0f")
    with pytest.raises(CorruptModel, match="implausible ir_version 1000"):
        check_onnx_bytes(b"\x08\xe8\x07:\x00")  # ir_version 1000, an empty graph


# -- bit flips never crash the host ---------------------------------------------------------------------------------
def test_bit_flipped_and_cut_files_never_crash(good):
    """500 mutated files loaded and run in a child process: each one runs or raises the runtime's own error.
    (`python -m tools.fuzz ARTIFACT --n 10000` is the same check at scale.)"""
    from tools.fuzz import OUTCOMES, fuzz

    result = fuzz(good, 500, chunk=500)
    assert result["host_crashes"] == 0, result["crashed_chunks"]
    assert result["tested"] == 500
    assert set(result["by_outcome"]) == set(OUTCOMES)
    assert result["by_outcome"]["refused in Python"] >= 100, result  # most corruption is caught before native code
    assert sum(result["by_kind"]["cut"].values()) == 125


# -- isolate=True: probe-load in a child process -----------------------------------------------------------------
def test_isolate_loads_good_and_reports_bad(tmp_path, good):
    with runtime.load(good, isolate=True) as r:
        assert r.infer(np.zeros((1, 1, 28, 28), np.float32))["logits"].shape == (1, 10)
    bad = _write(tmp_path / "bad.onnx", _model_bytes(_unknown_op))
    _raises_one_line(bad, "cannot be loaded by ONNX Runtime", isolate=True)


def test_isolate_turns_a_crash_into_an_artifact_error(tmp_path, good, monkeypatch):
    """A child killed by SIGSEGV (as a native crash would) becomes ArtifactError here; the host lives on."""
    import runtime.loader as loader

    real_run = subprocess.run

    def crashing_child(cmd, **kwargs):
        assert cmd[1:4] == ["-P", "-m", "runtime._probe"]  # -P: a ./runtime in the cwd cannot shadow the package
        return real_run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], **kwargs)

    monkeypatch.setattr(loader.subprocess, "run", crashing_child)
    _raises_one_line(good, r"crashed the backend in a probe process \(SIGSEGV\)", isolate=True)
