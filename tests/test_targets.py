"""Targets beyond CPU: the registry, the jetson deploy bundle, the gpu target's availability, TensorRT builds.

The CPU tests run real code (a tiny CNN exported with the dynamo exporter and quantized to QDQ); the
TensorRT build and run are behind the `tensorrt` marker and skip with what is missing.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from targets import Artifact, TargetError, TargetSpec, availability, get_target

REPO = Path(__file__).resolve().parent.parent
META = {"labels": ["a", "b", "c"], "preprocess": {"scale": 1 / 255, "mean": 0.5, "std": 0.25, "layout": "NCHW"},
        "expected_accuracy": {"test_top1": 0.91}, "producer": "test"}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A tiny ResNet-style CNN (1 x 12 x 12 -> 3 classes): FP32 ONNX with a dynamic batch, and its QDQ INT8."""
    import torch

    from compress.export.onnx_export import export_onnx
    from compress.quantization.static import quantize_static_qdq
    from compress.recipe import QuantConfig
    from models import build_model

    torch.manual_seed(0)
    model = build_model("resnet-cnn", (1, 12, 12), 3, width=4, stages=2).eval()
    calib = np.random.default_rng(0).standard_normal((32, 1, 12, 12)).astype(np.float32)
    d = tmp_path_factory.mktemp("tiny")
    fp32, int8 = d / "tiny.onnx", d / "tiny.int8.onnx"
    export_onnx(model, calib, fp32)
    quantize_static_qdq(fp32, int8, calib, QuantConfig())
    return fp32, int8, calib


def test_registry_lists_every_target_with_a_reason():
    avail = availability()
    assert list(avail) == ["cpu", "gpu", "jetson", "mobile"]
    for name, (ok, why) in avail.items():
        assert isinstance(ok, bool) and why, name
    assert avail["jetson"][0] is True and "bundle" in avail["jetson"][1]


@pytest.mark.parametrize("name, match", [
    ("jetsn", r"target 'jetsn' unknown; known: cpu, gpu, jetson, mobile"),
    ("tpu", r"known: cpu, gpu, jetson, mobile"),
])
def test_unknown_target_names_the_known_ones(name, match):
    with pytest.raises(TargetError, match=match):
        get_target(name)


def test_cpu_target_checks_the_copy_on_real_inputs(tiny_onnx, tmp_path):
    _, int8, calib = tiny_onnx
    before = hashlib.sha256(int8.read_bytes()).hexdigest()
    art = get_target("cpu").compile(int8, TargetSpec("cpu"), tmp_path / "cpu", META, check=calib)
    assert art.path == tmp_path / "cpu" / "model.onnx" and art.runtime == "onnxruntime"
    assert hashlib.sha256(int8.read_bytes()).hexdigest() == before
    assert art.path.read_bytes() == int8.read_bytes()
    parity = art.metadata["parity_vs_source"]["logits"]
    assert parity["ok"] is True and parity["samples"] == 32 and parity["max_abs_diff"] <= 1e-5
    sidecar = json.loads((tmp_path / "cpu" / "model.onnx.meta.json").read_text())
    assert sidecar["parity_vs_source"] == art.metadata["parity_vs_source"] and sidecar["labels"] == ["a", "b", "c"]
    # a tuple with one array per input works the same; without check the graph is only opened
    assert get_target("cpu").compile(int8, TargetSpec("cpu"), tmp_path / "t", META, check=(calib,)).metadata[
        "parity_vs_source"]["logits"]["ok"] is True
    assert "parity_vs_source" not in get_target("cpu").compile(int8, TargetSpec("cpu"), tmp_path / "n", META).metadata
    with pytest.raises(TargetError, match=r"check has 2 array\(s\) for a model with 1 input\(s\) \(input\)"):
        get_target("cpu").compile(int8, TargetSpec("cpu"), tmp_path / "two", META, check=(calib, calib))


def test_cpu_target_never_ships_a_graph_that_gives_other_outputs(tiny_onnx, tmp_path, monkeypatch):
    """The copy opens but is not the source (here: the FP32 graph in place of the INT8 one): nothing ships."""
    import shutil

    fp32, int8, calib = tiny_onnx
    real_copy = shutil.copyfile
    monkeypatch.setattr(shutil, "copyfile", lambda src, dst: real_copy(fp32, dst))
    out = tmp_path / "cpu"
    with pytest.raises(TargetError, match=r"model.onnx differs from ONNX Runtime on tiny.int8.onnx: output 'logits': "
                                          r"max_abs_diff .* > atol 1e-05 .*; not shipped"):
        get_target("cpu").compile(int8, TargetSpec("cpu"), out, META, check=calib)
    assert list(out.iterdir()) == []  # neither the graph, nor its sidecar, nor a temporary file


def test_gpu_target_says_why_not_here():
    """No CUDA driver on the CI box: the gpu target is unavailable, and says what is missing for both paths."""
    from runtime.tensorrt_backend import cuda_status

    if cuda_status()[0]:
        pytest.skip("this machine has a CUDA driver; the 'not here' message is not produced")
    ok, why = get_target("gpu").available()
    assert ok is False
    assert why.startswith("no TensorRT (") and "no ONNX Runtime CUDA" in why
    assert "libcuda.so.1" in why or "cuInit" in why  # the driver check ran, before any TensorRT import
    assert "tensorrt" not in sys.modules


def test_gpu_compile_refuses_with_the_reason(tiny_onnx, tmp_path):
    from runtime.tensorrt_backend import cuda_status

    if cuda_status()[0]:
        pytest.skip("this machine has a CUDA driver")
    _, int8, _ = tiny_onnx
    before = hashlib.sha256(int8.read_bytes()).hexdigest()
    with pytest.raises(TargetError, match=r"target 'gpu' cannot be built here: no TensorRT"):
        get_target("gpu").compile(int8, TargetSpec("gpu"), tmp_path / "gpu", META)
    assert hashlib.sha256(int8.read_bytes()).hexdigest() == before


def test_cuda_probe_does_not_import_tensorrt():
    code = ("import sys; from targets import availability; availability(); "
            "print(sorted(m for m in ('tensorrt', 'torch', 'litert_torch', 'ai_edge_litert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("options, match", [
    ({"preset": "nano"}, r"jetson preset 'nano' unknown; known: orin, xavier, orin-nano"),
    ({"preset": "orin-nano", "dla_core": 0}, r"preset 'orin-nano' has no DLA"),
    ({"min_batch": 4, "opt_batch": 2}, r"1 <= min <= opt <= max, got 4/2/8"),
    ({"batch": 4}, r"unknown option\(s\) \['batch'\]; known: preset, "),
])
def test_jetson_bad_options(tiny_onnx, tmp_path, options, match):
    with pytest.raises(TargetError, match=match):
        get_target("jetson").compile(tiny_onnx[1], TargetSpec("jetson", options=options), tmp_path, META)


@pytest.mark.parametrize("preset, dla_flags", [
    ("orin", ["--useDLACore=0", "--allowGPUFallback"]),
    ("xavier", ["--useDLACore=0", "--allowGPUFallback"]),
    ("orin-nano", []),
])
def test_jetson_bundle(tiny_onnx, tmp_path, preset, dla_flags):
    from runtime.tensorrt_backend import cuda_status

    _, int8, calib = tiny_onnx
    before = hashlib.sha256(int8.read_bytes()).hexdigest()
    art = get_target("jetson").compile(int8, TargetSpec("jetson", options={"preset": preset, "max_batch": 16}),
                                       tmp_path / preset, META, check=calib)
    assert isinstance(art, Artifact) and art.path == tmp_path / preset and art.runtime == "tensorrt"
    assert hashlib.sha256(int8.read_bytes()).hexdigest() == before  # the input is not modified
    names = {p.name for p in art.path.iterdir()}
    assert {"model.onnx", "manifest.json", "build_engine.sh", "README.txt", "reference.npz",
            "model.onnx.meta.json"} <= names
    assert all(f.is_file() for f in art.files) and {f.name for f in art.files} <= names

    m = json.loads((art.path / "manifest.json").read_text())
    assert m["preset"] == preset and m["precision"] == "int8+fp16"
    assert m["dla_core"] == (0 if dla_flags else None) and m["gpu_fallback"] == bool(dla_flags)
    assert m["inputs"] == {"input": {"min": [1, 1, 12, 12], "opt": [1, 1, 12, 12], "max": [16, 1, 12, 12]}}
    assert m["source"] == {"name": int8.name, "sha256": before, "bytes": int8.stat().st_size}
    assert m["toolkit"].startswith("edge-compress ") and m["expected_accuracy"] == {"test_top1": 0.91}
    assert m["metadata"]["labels"] == ["a", "b", "c"]
    assert (art.path / "model.onnx").read_bytes() == int8.read_bytes()
    if not cuda_status()[0]:
        assert m["engine_built"]["here"] is False and "libcuda" in m["engine_built"]["why"]
        assert "model.engine" not in names

    script = (art.path / "build_engine.sh").read_text()
    assert (art.path / "build_engine.sh").stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(art.path / "build_engine.sh")], check=True)  # valid shell
    flags = [line.strip().rstrip(" \\") for line in script.splitlines() if line.strip().startswith("--")]
    assert flags == (["--onnx=model.onnx", "--saveEngine=model.engine", "--int8", "--fp16"] + dla_flags +
                     ["--minShapes=input:1x1x12x12", "--optShapes=input:1x1x12x12", "--maxShapes=input:16x1x12x12",
                      "--timingCacheFile=timing.cache", f"--memPoolSize=workspace:{m['workspace_mib']}"])
    assert m["trtexec"][1:] == flags

    # reference.npz: real inputs and ONNX Runtime's outputs on the bundled graph, for the on-device check
    import runtime

    ref = np.load(art.path / "reference.npz")
    assert ref["inputs"].shape == (32, 1, 12, 12) and ref["outputs"].shape == (32, 3)
    np.testing.assert_array_equal(ref["inputs"], calib)
    with runtime.load(art.path / "model.onnx") as r:
        np.testing.assert_allclose(r.infer(ref["inputs"])["logits"], ref["outputs"], rtol=0, atol=1e-5)
        assert r.metadata["labels"] == ["a", "b", "c"]  # the sidecar travels with the bundle
    readme = (art.path / "README.txt").read_text()
    assert "./build_engine.sh" in readme and "python3 -m runtime.tensorrt_backend" in readme


def test_jetson_bundle_rewrite_clears_a_stale_engine(tiny_onnx, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "model.engine").write_bytes(b"stale engine from another model")
    get_target("jetson").compile(tiny_onnx[1], TargetSpec("jetson"), out, META)
    from runtime.tensorrt_backend import cuda_status

    if not cuda_status()[0]:
        assert not (out / "model.engine").exists()


def test_tensorrt_runner_without_driver_names_the_reason(tiny_onnx, tmp_path):
    """A bundle without an engine says to run build_engine.sh; an engine file without CUDA says why."""
    from runtime.errors import ArtifactError, BackendMissing
    from runtime.tensorrt_backend import TensorRTRunner, cuda_status

    art = get_target("jetson").compile(tiny_onnx[1], TargetSpec("jetson"), tmp_path / "b", META)
    if not cuda_status()[0]:
        with pytest.raises(ArtifactError, match=r"has no model.engine yet: run build_engine.sh on the device"):
            TensorRTRunner(art.path)
        engine = tmp_path / "x.engine"
        engine.write_bytes(b"not really an engine")
        with pytest.raises(BackendMissing, match=r"TensorRT needs a working CUDA driver: no NVIDIA driver"):
            TensorRTRunner(engine)
    with pytest.raises(ArtifactError, match=r"not a TensorRT engine"):
        TensorRTRunner(tiny_onnx[1])


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "int4"}, r"precision 'int4' unknown; known: int8\+fp16, int8, fp16, fp32"),
    ({"strongly_typed": True, "precision": "int8+fp16"}, r"strongly typed network takes its precision"),
    ({"min_batch": 0}, r"1 <= min <= opt <= max"),
    ({"workspace_mib": 0}, r"workspace_mib must be positive"),
])
def test_engine_config_validation(kwargs, match):
    from targets.tensorrt import EngineConfig

    with pytest.raises(TargetError, match=match):
        EngineConfig(**kwargs)


def test_trtexec_command_strongly_typed_and_static_batch():
    from targets.tensorrt import EngineConfig, trtexec_command

    static = {"input": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}}
    cmd = trtexec_command("m.onnx", "m.engine", static, EngineConfig(precision="int8", strongly_typed=True,
                                                                      timing_cache=None))
    assert cmd == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--stronglyTyped",
                   "--memPoolSize=workspace:1024"]


# -- on a machine with TensorRT and a GPU --------------------------------------------------------------------
def _need_tensorrt():
    from targets.tensorrt import status

    ok, why = status()
    if not ok:
        pytest.skip(f"TensorRT engine builds need a CUDA driver and TensorRT: {why}")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision, strongly_typed", [("int8+fp16", False), ("int8", True)])
def test_tensorrt_engine_matches_onnxruntime(tiny_onnx, tmp_path, precision, strongly_typed):
    _need_tensorrt()
    _, int8, calib = tiny_onnx
    art = get_target("gpu").compile(
        int8, TargetSpec("gpu", options={"backend": "tensorrt", "precision": precision,
                                         "strongly_typed": strongly_typed, "max_batch": 32}),
        tmp_path, META, check=calib)
    assert art.runtime == "tensorrt" and art.path.suffix == ".engine"
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert art.metadata["parity_vs_onnx_cpu"]["top1_agreement"] >= 0.97
    from runtime.tensorrt_backend import TensorRTRunner

    with TensorRTRunner(art.path) as r:
        for batch in (1, 4, 32):
            assert r.infer(calib[:batch])["logits"].shape == (batch, 3)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_jetson_bundle_builds_its_engine_where_tensorrt_exists(tiny_onnx, tmp_path):
    _need_tensorrt()
    art = get_target("jetson").compile(tiny_onnx[1], TargetSpec("jetson", options={"preset": "orin-nano"}),
                                       tmp_path, META, check=tiny_onnx[2])
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["engine_built"]["here"] is True and m["engine_built"]["parity"]["ok"] is True
    assert (tmp_path / "model.engine").is_file() and art.path == tmp_path
