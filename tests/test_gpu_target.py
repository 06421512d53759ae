"""GPU and TensorRT targets, what can be checked on a CPU: the providers an artifact's sidecar names (and the CPU
fallback with its warning), the provider each bench row ran on, the FP16 candidate and its parity on the CPU
provider, the environment read from the modules running, and the jetson manifest against its model's Q/DQ nodes.

What needs CUDA is marked `gpu` and skips with the reason; tools/gpu_check.py measures the rest on a GPU machine.
"""
from __future__ import annotations

import json
import shutil
import sys
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import runtime
from runtime.errors import BackendMissing
from runtime.onnx_backend import ProviderFallbackWarning, resolve_providers

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
GPU_SIDECAR = {"labels": ["a", "b", "c"], "target": "gpu", "runtime": "ort-cuda", "providers": [CUDA, CPU]}


def _cuda_in_build() -> bool:
    import onnxruntime

    return CUDA in onnxruntime.get_available_providers()


def _cuda_runs() -> tuple[bool, str]:
    from runtime.tensorrt_backend import cuda_status

    if not _cuda_in_build():
        return False, "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return cuda_status()


needs_cuda = pytest.mark.skipif(not _cuda_runs()[0], reason=f"needs CUDA: {_cuda_runs()[1]}")
cpu_build_only = pytest.mark.skipif(_cuda_in_build(), reason="this onnxruntime has CUDA: no fallback to check")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A tiny ResNet-style CNN (1 x 12 x 12 -> 3 classes): FP32 ONNX, its QDQ INT8 and its FP16 copy, with rows."""
    import torch

    from compress.quantization import fp16
    from compress.export.onnx_export import export_onnx
    from compress.quantization.static import quantize_static_qdq
    from compress.recipe import QuantConfig
    from models import build_model

    torch.manual_seed(0)
    model = build_model("resnet-cnn", (1, 12, 12), 3, width=4, stages=2).eval()
    rows = np.random.default_rng(0).standard_normal((96, 1, 12, 12)).astype(np.float32)
    d = tmp_path_factory.mktemp("tiny")
    fp32, int8, half = d / "baseline.onnx", d / "baseline.int8.onnx", d / "baseline.fp16.onnx"
    export_onnx(model, rows, fp32)
    quantize_static_qdq(fp32, int8, rows[:32], QuantConfig())
    info = fp16.convert_file(fp32, half)
    return SimpleNamespace(fp32=fp32, int8=int8, fp16=half, rows=rows, fp16_info=info, dir=d)


def _with_sidecar(src: Path, dst: Path, meta: dict) -> Path:
    shutil.copyfile(src, dst)
    runtime.sidecar_path(dst).write_text(json.dumps(meta))
    return dst


# -- runtime.load and the sidecar's providers ------------------------------------------------------------------


def test_resolve_providers_keeps_the_order_and_says_why_it_falls_back():
    assert resolve_providers([CUDA, CPU], ["TensorrtExecutionProvider", CUDA, CPU], "GPU", "1.31.1") == ([CUDA, CPU],
                                                                                                           None)
    use, why = resolve_providers([CUDA, CPU], ["AzureExecutionProvider", CPU], "CPU", "1.31.1")
    assert use == [CPU]
    assert why == ("CUDAExecutionProvider is not available in this onnxruntime build (onnxruntime 1.31.1, CPU only); "
                   "running on CPUExecutionProvider (install onnxruntime-gpu for CUDA)")
    assert resolve_providers([CUDA], [CPU], "CPU", "1.31.1")[0] == [CPU]  # CPU even when the sidecar omits it
    assert resolve_providers([CPU], [CPU], "CPU", "1.31.1") == ([CPU], None)


@cpu_build_only
def test_gpu_sidecar_falls_back_to_the_cpu_with_a_warning(tiny, tmp_path):
    path = _with_sidecar(tiny.fp32, tmp_path / "model.onnx", GPU_SIDECAR)
    with pytest.warns(ProviderFallbackWarning, match=r"model.onnx: CUDAExecutionProvider is not available in this "
                                                     r"onnxruntime build \(onnxruntime [\d.]+, CPU only\); running on "
                                                     r"CPUExecutionProvider"):
        runner = runtime.load(path)
    with runner:
        assert runner.providers == [CPU]
        assert runner.requested_providers == [CUDA, CPU]
        assert "CUDAExecutionProvider is not available" in runner.fallback_reason
        assert "[onnxruntime on CPUExecutionProvider]" in repr(runner)
        assert runner.infer(tiny.rows[:2])["logits"].shape == (2, 3)
        assert runner.metadata["labels"] == ["a", "b", "c"]


def test_explicit_providers_win_over_the_sidecar(tiny, tmp_path):
    path = _with_sidecar(tiny.fp32, tmp_path / "model.onnx", GPU_SIDECAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the caller chose
        with runtime.load(path, providers=[CPU]) as runner:
            assert runner.providers == [CPU] and runner.fallback_reason is None
    if not _cuda_in_build():  # an explicit provider must exist: no silent fallback
        with pytest.raises(BackendMissing, match=r"provider\(s\) \['CUDAExecutionProvider'\] not available here"):
            runtime.load(path, providers=[CUDA])


def test_cpu_sidecar_and_no_sidecar_load_quietly(tiny, tmp_path):
    with_cpu = _with_sidecar(tiny.fp32, tmp_path / "cpu.onnx", {"providers": [CPU]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (with_cpu, tiny.fp32):
            with runtime.load(path) as runner:
                assert runner.providers == [CPU] and runner.fallback_reason is None


@cpu_build_only
def test_a_provider_in_the_build_that_does_not_start_is_reported(tiny, tmp_path, monkeypatch):
    """onnxruntime-gpu on a machine without a driver: the EP is listed but the session runs on the CPU. ONNX
    Runtime does that silently; the runner warns and says so. (Simulated: the listing claims CUDA.)"""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    path = _with_sidecar(tiny.fp32, tmp_path / "model.onnx", GPU_SIDECAR)
    with pytest.warns(ProviderFallbackWarning, match=r"CUDAExecutionProvider could not be started by ONNX Runtime"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Specified provider", category=UserWarning)
            runner = runtime.load(path)
    with runner:
        assert runner.providers == [CPU]


def test_io_binding_runs_give_the_same_outputs(tiny):
    """What the bench times on CUDA (inputs copied once, outputs left on the device), exercised on the CPU."""
    x = tiny.rows[:8]
    with runtime.load(tiny.fp32) as runner:
        run = runner.bound_run({runner.inputs[0].name: x})
        run()
        np.testing.assert_array_equal(run.outputs()[0].numpy(), runner.infer(x)["logits"])


# -- FP16 ------------------------------------------------------------------------------------------------------


def test_fp16_copy_keeps_float32_io_and_matches_fp32_on_the_cpu_provider(tiny):
    """Bar: top-1 agreement 1.0 and max |logit diff| <= 1e-2. float16 keeps 11 significant bits (relative step
    4.9e-4); through this CNN's few layers the logits (order 1) move by ~1e-4, so 1e-2 leaves 100x room for
    accumulation order while any real breakage (an overflow, a dropped op, a wrong cast) lands far above it. On an
    x86 CPU most float16 ops run in float32 between inserted casts, so this checks the conversion and the rounding
    of weights; float16 arithmetic on CUDA is test_fp16_parity_on_cuda's (marked gpu)."""
    import onnx

    from compress.quantization import fp16

    half = onnx.load(str(tiny.fp16))
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [f32]
    assert fp16.count_fp16_initializers(half) == tiny.fp16_info["fp16_initializers"] > 0
    assert fp16.count_fp16_initializers(onnx.load(str(tiny.fp32))) == 0  # the source is untouched
    weights = {t.name: len(t.raw_data) for t in onnx.load(str(tiny.fp32)).graph.initializer if t.data_type == f32}
    halved = {t.name: len(t.raw_data) for t in half.graph.initializer if t.name in weights}
    assert halved == {name: n // 2 for name, n in weights.items()}  # every float weight stored in 2 bytes

    c = fp16.parity(tiny.fp32, tiny.fp16, tiny.rows)
    assert c.samples == len(tiny.rows)
    assert c.top1_agreement == 1.0, c.to_dict()
    assert c.max_abs_diff <= fp16.PARITY_ATOL, c.to_dict()
    assert c.max_abs_diff > 0  # it really is another graph
    with runtime.load(tiny.fp16) as runner:  # an app feeds it float32, as the FP32 file
        assert runner.inputs[0].dtype == np.float32 and runner.outputs[0].dtype == np.float32


def test_to_fp16_is_pure(tiny):
    import onnx

    from compress.quantization.fp16 import to_fp16

    model = onnx.load(str(tiny.fp32))
    before = model.SerializeToString()
    to_fp16(model)
    assert model.SerializeToString() == before


def test_fp16_candidates_for_the_baseline_and_the_student(tiny, tmp_path):
    from compress.quantization.fp16 import candidates
    from compress.shipping.compile import onnx_candidates

    student = shutil.copyfile(tiny.fp32, tmp_path / "distilled.onnx")
    base = shutil.copyfile(tiny.fp32, tmp_path / "baseline.onnx")
    paths, info = candidates({"baseline": base, "distilled": student}, tiny.rows[:32])
    assert paths == {"baseline-fp16": tmp_path / "baseline.fp16.onnx",
                     "distilled-fp16": tmp_path / "distilled.fp16.onnx"}
    assert info["distilled-fp16"]["parity_vs_fp32_cpu"]["top1_agreement"] == 1.0
    assert info["distilled-fp16"]["keep_io_types"] is True
    variants = onnx_candidates({"baseline": base, "distilled": student}, {"compressed": tiny.int8}, "distilled",
                               "static QDQ", {"baseline": "the model", "distilled": "pruned + distilled"}, paths)
    by_name = {v.name: v.precision for v in variants}
    assert by_name == {"baseline": "fp32", "distilled": "fp32", "distilled-int8": "int8", "baseline-fp16": "fp16",
                       "distilled-fp16": "fp16"}


def test_gpu_target_offers_fp16_and_names_cuda_first():
    from targets import TargetSpec, get_target

    gpu = get_target("gpu")
    assert gpu.PROVIDERS[0] == CUDA and gpu.PROVIDERS[-1] == CPU and gpu.FP16_CANDIDATES is True
    assert not getattr(get_target("cpu"), "FP16_CANDIDATES", False)
    assert get_target("jetson").ships_tensorrt(TargetSpec("jetson")) is True
    assert gpu.ships_tensorrt(TargetSpec("gpu", options={"backend": "ort-cuda"})) is False


# -- TensorRT targets ------------------------------------------------------------------------------------------


def _count_qdq(path: Path) -> int:
    import onnx

    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(path)).graph.node)


def test_jetson_manifest_says_what_model_onnx_holds(tiny, tmp_path):
    from targets import TargetSpec, get_target

    jetson = get_target("jetson")
    art = jetson.compile(tiny.int8, TargetSpec("jetson"), tmp_path / "int8", {}, check=tiny.rows[:16])
    m = json.loads((art.path / "manifest.json").read_text())
    n = _count_qdq(art.path / "model.onnx")
    assert n > 0 and m["qdq_nodes"] == n and m["quantization"] == f"explicit ({n} Q/DQ nodes)"
    assert m["precision"] == "int8+fp16" and "--int8" in m["trtexec"]

    art = jetson.compile(tiny.fp32, TargetSpec("jetson"), tmp_path / "fp32", {}, check=tiny.rows[:16])
    m = json.loads((art.path / "manifest.json").read_text())
    assert _count_qdq(art.path / "model.onnx") == 0 == m["qdq_nodes"]
    assert m["quantization"] == "none (FP32 graph; TensorRT --fp16 builds float layers in FP16)"
    # --int8 without Q/DQ scales would make trtexec invent placeholder ranges: FP16 only
    assert m["precision"] == "fp16" and "--int8" not in m["trtexec"] and "--fp16" in m["trtexec"]
    assert "--int8" not in (art.path / "build_engine.sh").read_text()


def _row(name: str, p50: float, meets: bool, precision: str = "fp32") -> dict:
    return {"name": name, "precision": precision, "latency_ms": {"1": {"p50": p50}},
            "budget": {"meets": meets, "heldout_accuracy": 0.9}}


def test_tensorrt_targets_ship_the_qdq_graph_whatever_the_host_timed():
    from compress.shipping.compile import tensorrt_choice

    rows = [_row("baseline", 1.0, True), _row("distilled", 0.2, True), _row("int8", 3.0, True, "int8"),
            _row("distilled-int8", 5.0, True, "int8")]
    assert tensorrt_choice(rows, "distilled") == "distilled-int8"  # the slowest on the host, and it ships
    rows[-1]["budget"]["meets"] = False
    assert tensorrt_choice(rows, "distilled") == "int8"
    rows[2]["budget"]["meets"] = False
    assert tensorrt_choice(rows, "distilled") == "distilled"
    assert tensorrt_choice([_row("baseline", 1.0, False)], "distilled") is None


def _fake_run(target_name: str) -> SimpleNamespace:
    from targets import get_target

    recipe = SimpleNamespace(target=SimpleNamespace(name=target_name), bench=SimpleNamespace(threads=2))
    return SimpleNamespace(target=get_target(target_name), recipe=recipe)


def test_reports_say_where_latency_was_measured():
    from compress.shipping.report import latency_measured_on

    env = {"cpu": "Some CPU"}
    cpu_rows = [{"name": "baseline", "runtime": "onnxruntime", "provider": CPU}]
    jetson = latency_measured_on(_fake_run("jetson"), cpu_rows, env)
    assert jetson.startswith("build host CPU, Some CPU (ONNX Runtime); device latency: run build_engine.sh and "
                             "trtexec on the Jetson")
    assert latency_measured_on(_fake_run("cpu"), cpu_rows, env) == "build host CPU, Some CPU (ONNX Runtime)"
    fell = [{**cpu_rows[0], "fell_back_to_cpu": True}]
    assert "no GPU latency was measured" in latency_measured_on(_fake_run("gpu"), fell, env)
    cuda = [{"name": "baseline", "runtime": "onnxruntime", "provider": CUDA}]
    on_gpu = latency_measured_on(_fake_run("gpu"), cuda, {**env, "gpu": {"name": "NVIDIA H200"}})
    assert on_gpu.startswith("NVIDIA H200 (ONNX Runtime CUDAExecutionProvider")


# -- the bench: the provider of every row, the environment -----------------------------------------------------


def _bench(tiny, providers=None):
    from bench.data.splits import Split
    from bench.report import bench_variants
    from bench.variants import Variant

    split = Split(tiny.rows[:48], np.arange(48) % 3)
    variants = [Variant("baseline", tiny.fp32, "fp32"), Variant("baseline-fp16", tiny.fp16, "fp16")]
    return bench_variants(variants, split, batch_sizes=(1, 4), warmup=1, runs=3, rounds=2, threads=1,
                          providers=providers)


def test_report_rows_carry_their_provider(tiny):
    from bench.report import providers_used

    rows = _bench(tiny)
    assert [(r["provider"], r["runtime"]) for r in rows] == [(CPU, "onnxruntime")] * 2
    assert all("fell_back_to_cpu" not in r for r in rows)
    assert providers_used(rows) == [CPU]


@cpu_build_only
def test_a_gpu_bench_that_fell_back_says_so_on_every_row(tiny):
    with pytest.warns(ProviderFallbackWarning, match=r"bench: CUDAExecutionProvider is not available"):
        rows = _bench(tiny, providers=(CUDA, CPU))
    for r in rows:
        assert r["provider"] == CPU and r["fell_back_to_cpu"] is True
        assert r["runtime"] == "onnxruntime"  # the runtime; where it ran is the provider, never the GPU for a CPU figure
        assert "io_binding" not in r and set(r["latency_ms"]) == {"1", "4"}


def test_environment_versions_are_the_running_modules(monkeypatch):
    import onnxruntime

    from runtime import environment

    assert environment.versions()["onnxruntime"] == onnxruntime.__version__
    assert environment.versions()["numpy"] == np.__version__
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__="9.9.9-running"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.99.0+cu999"))
    monkeypatch.delitem(sys.modules, "onnxscript", raising=False)
    v = environment.versions()
    assert v["onnxruntime"] == "9.9.9-running" and v["torch"] == "2.99.0+cu999"  # not the installed metadata
    from importlib import metadata

    assert v["onnxscript"] == metadata.version("onnxscript")  # not imported here: its installed version, as before


def test_environment_names_the_gpu_only_from_what_reports_it(monkeypatch, tmp_path):
    from runtime import environment

    plain = environment.describe(2, [CPU])
    assert plain["providers_used"] == [CPU] and "gpu" not in plain
    monkeypatch.setattr(environment.shutil, "which", lambda name: None)  # no nvidia-smi
    monkeypatch.setitem(sys.modules, "torch", None)  # and no torch: nothing to say, nothing invented
    assert environment.gpu_info() == {}
    assert "gpu" not in environment.describe(2, [CUDA, CPU])

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 570.124.06'\necho 'NVIDIA H200, 570.124.06'\n")
    smi.chmod(0o755)
    monkeypatch.setattr(environment.shutil, "which", lambda name: str(smi))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = environment.describe(2, [CUDA, CPU])
    assert env["gpu"]["name"] == "NVIDIA H200" and env["gpu"]["driver"] == "570.124.06"
    assert env["providers_used"] == [CPU, CUDA]


def test_cli_header_names_the_device_that_ran_the_bench():
    from compress.cli.main import bench_device

    env = {"cpu": "Some CPU", "int8_class": "AVX2", "providers_used": [CPU]}
    assert bench_device({"environment": env, "variants": []}) == "Some CPU, AVX2"
    fell = {"environment": env, "variants": [{"fell_back_to_cpu": True}]}
    assert bench_device(fell) == "Some CPU, AVX2, CPU fallback: no GPU provider here"
    gpu = {"environment": {**env, "providers_used": [CPU, CUDA], "gpu": {"name": "NVIDIA H200"}}, "variants": []}
    assert bench_device(gpu) == "NVIDIA H200, ONNX Runtime CUDA"


# -- on a GPU --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_gpu_sidecar_runs_on_cuda(tiny, tmp_path):
    path = _with_sidecar(tiny.fp32, tmp_path / "model.onnx", GPU_SIDECAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProviderFallbackWarning)
        with runtime.load(path) as runner:
            assert runner.providers[0] == CUDA and "on CUDAExecutionProvider" in repr(runner)
            got = runner.infer(tiny.rows)["logits"]
    with runtime.load(tiny.fp32, providers=[CPU]) as cpu:
        ref = cpu.infer(tiny.rows)["logits"]
    assert (got.argmax(1) == ref.argmax(1)).mean() == 1.0 and np.abs(got - ref).max() < 1e-3


@pytest.mark.gpu
@needs_cuda
def test_gpu_bench_rows_run_on_cuda_with_io_binding(tiny):
    from runtime import environment
    from bench.report import providers_used

    rows = _bench(tiny, providers=(CUDA, CPU))
    for r in rows:
        assert r["provider"] == CUDA and r["fell_back_to_cpu"] is False and r["runtime"] == "onnxruntime"
        assert "io_binding" in r and r["memory_mib"] == {}
    env = environment.describe(2, providers_used(rows))
    assert CUDA in env["providers_used"] and env["gpu"].get("name")


@pytest.mark.gpu
@needs_cuda
def test_fp16_parity_on_cuda(tiny):
    from compress.quantization import fp16

    c = fp16.parity(tiny.fp32, tiny.fp16, tiny.rows, providers=[CUDA, CPU])
    assert c.top1_agreement == 1.0 and c.max_abs_diff <= fp16.PARITY_ATOL, c.to_dict()


# -- the pipeline (Fashion-MNIST subset, shared with tests/test_pipeline.py) -----------------------------------


@pytest.mark.slow
def test_pipeline_reports_providers_and_ships_qdq_to_jetson(small_run, tmp_path):
    from compress.pipeline import run
    from compress.recipe import TargetConfig
    from compress.shipping.compile import TENSORRT_RULE
    from tests.conftest import small_recipe

    cpu_report, out = small_run
    assert {r["provider"] for r in cpu_report["variants"]} == {CPU}
    assert cpu_report["environment"]["providers_used"] == [CPU] and "gpu" not in cpu_report["environment"]
    assert cpu_report["latency_measured_on"].startswith("build host CPU, ")

    out = Path(shutil.copytree(out, tmp_path / "run"))  # a copy: the shared run's cache stays the cpu target's
    report = run(small_recipe(target=TargetConfig(name="jetson")), out)
    bundle = out / "target" / "jetson"
    manifest = json.loads((bundle / "manifest.json").read_text())
    n = _count_qdq(bundle / "model.onnx")
    assert manifest["qdq_nodes"] == n
    assert manifest["quantization"] == (f"explicit ({n} Q/DQ nodes)" if n else
                                        "none (FP32 graph; TensorRT --fp16 builds float layers in FP16)")
    budget = report["budget"]
    assert budget["rule"] == TENSORRT_RULE
    student = report["student"]["chosen"]
    if f"{student}-int8" in budget["meets"]:  # within the budget: the Q/DQ graph ships, whatever the host timed
        assert budget["shipped"] == f"{student}-int8" and n > 0
    assert "device latency: run build_engine.sh and trtexec on the Jetson" in report["latency_measured_on"]
    assert report["latency_measured_on"].startswith("build host CPU, ")
