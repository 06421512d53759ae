"""What only a GPU can confirm of issue 22's target / runtime / bench part; run it on a machine with an NVIDIA GPU,
its driver and onnxruntime-gpu (pip install onnxruntime-gpu==<the pinned onnxruntime version>):

    python tools/gpu_check.py                      # ~1-2 min: providers, FP16 parity on CUDA, the bench on CUDA
    python tools/gpu_check.py --pipeline           # + `compress run --target gpu` on a 1-epoch recipe (needs
                                                   #   Fashion-MNIST in /usr/share/datasets/fashion-mnist)
    python tools/gpu_check.py --allow-cpu          # smoke-test this script on a CPU-only box (everything falls back)

Checks (each printed, all written to OUT/gpu_check.json; exit status 1 when one fails):
1. runtime.load on an artifact whose sidecar names the gpu target's providers runs on CUDAExecutionProvider with no
   ProviderFallbackWarning, and repr(runner) says so.
2. FP16 (ONNX Runtime's float16 converter, keep_io_types) on CUDA against FP32 on the CPU: top-1 agreement and max
   abs logit diff on the default CNN (random weights) and a 75 %-narrower student.
3. bench_variants with the gpu target's providers: every row's provider is CUDA (fell_back_to_cpu false, runtime
   provider CUDA, I/O binding), p50 at batch 1 / 32 / 256 of FP32, FP16 and Q/DQ INT8; the environment names
   the GPU, driver and CUDA versions.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def build(out: Path) -> dict[str, Path]:
    """Default-recipe CNN (widths 32..256) and a student (8..64), random weights: FP32, FP16 and Q/DQ INT8 files."""
    import numpy as np
    import torch

    from compress.export.onnx_export import export_onnx
    from compress.quantization.fp16 import convert_file
    from compress.quantization.static import quantize_static_qdq
    from compress.recipe import QuantConfig
    from models import build_model

    torch.manual_seed(0)
    calib = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    files = {}
    for name, width in (("baseline", 32), ("student", 8)):
        model = build_model("resnet-cnn", (1, 28, 28), 10, width=width, stages=4).eval()
        files[name] = out / f"{name}.onnx"
        export_onnx(model, calib, files[name])
        files[f"{name}-fp16"] = out / f"{name}.fp16.onnx"
        convert_file(files[name], files[f"{name}-fp16"])
        files[f"{name}-int8"] = out / f"{name}.int8.onnx"
        quantize_static_qdq(files[name], files[f"{name}-int8"], calib, QuantConfig())
    return files


def check_load(files: dict[str, Path], out: Path) -> dict:
    import shutil

    import runtime
    from runtime.onnx_backend import ProviderFallbackWarning
    from targets import get_target

    path = out / "gpu" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    shutil.copyfile(files["baseline"], path)
    runtime.sidecar_path(path).write_text(json.dumps({"providers": list(get_target("gpu").PROVIDERS)}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with runtime.load(path) as runner:
            result = {"providers": runner.providers, "repr": repr(runner), "fallback_reason": runner.fallback_reason}
    result["fallback_warnings"] = [str(w.message) for w in caught if issubclass(w.category, ProviderFallbackWarning)]
    result["ok"] = runner.providers[0] == CUDA and not result["fallback_warnings"]
    return result


def check_fp16(files: dict[str, Path]) -> dict:
    import numpy as np

    import runtime
    from common.compare import compare
    from runtime.onnx_backend import providers_for

    x = np.random.default_rng(1).standard_normal((512, 1, 28, 28)).astype(np.float32)
    out = {}
    for name in ("baseline", "student"):
        with runtime.load(files[name], providers=[CPU]) as ref_runner:
            ref = ref_runner.infer(x)["logits"]
        with runtime.load(files[f"{name}-fp16"], providers=providers_for([CUDA, CPU])[0]) as runner:
            got, providers = runner.infer(x)["logits"], runner.providers
        c = compare(ref, got)
        out[name] = {"providers": providers, "top1_agreement": c.top1_agreement, "max_abs_diff": c.max_abs_diff,
                     "ok": providers[0] == CUDA and c.top1_agreement >= 0.99}
    out["ok"] = all(v["ok"] for v in out.values())
    return out


def check_bench(files: dict[str, Path], quick: bool = False) -> dict:
    import numpy as np

    from runtime import environment
    from bench.data.splits import Split
    from bench.report import bench_variants, providers_used
    from bench.variants import Variant
    from targets import get_target

    x = np.random.default_rng(2).standard_normal((512, 1, 28, 28)).astype(np.float32)
    split = Split(x, np.arange(len(x)) % 10)
    precision = {"": "fp32", "-fp16": "fp16", "-int8": "int8"}
    variants = [Variant(f"{n}{s}", files[f"{n}{s}"], p) for n in ("baseline", "student") for s, p in precision.items()]
    timing = dict(batch_sizes=(1, 32), warmup=1, runs=3, rounds=1) if quick else \
        dict(batch_sizes=(1, 32, 256), warmup=20, runs=100, rounds=4)
    rows = bench_variants(variants, split, threads=2, providers=get_target("gpu").PROVIDERS, **timing)
    table = {r["name"]: {"provider": r["provider"], "fell_back_to_cpu": r.get("fell_back_to_cpu"),
                         "runtime": r["runtime"], "io_binding": "io_binding" in r,
                         "p50_ms": {b: round(s["p50"], 4) for b, s in r["latency_ms"].items()}} for r in rows}
    base16 = table["baseline-fp16"]["p50_ms"]
    ratios = {name: {b: round(base16[b] / t["p50_ms"][b], 3) for b in base16} for name, t in table.items()}
    env = environment.describe(2, providers_used(rows))
    ok = all(t["provider"] == CUDA and t["fell_back_to_cpu"] is False
             for t in table.values()) and bool(env.get("gpu", {}).get("name"))
    return {"rows": table, "speedup_vs_fp16_baseline": ratios, "environment": env, "ok": ok}


def check_pipeline(out: Path) -> dict:
    import yaml

    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        return {"skipped": "Fashion-MNIST not in /usr/share/datasets/fashion-mnist", "ok": True}
    recipe = yaml.safe_load((ROOT / "compress/recipes/cnn-fashion.yaml").read_text())
    recipe.update(name="gpu-check")
    recipe["train"]["epochs"], recipe["prune"]["finetune_epochs"], recipe["distill"]["epochs"] = 1, 1, 1
    recipe["target"]["name"] = "gpu"
    recipe["bench"].update(batch_sizes=[1, 32, 256], runs=100, rounds=4)
    path = out / "gpu-check.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir = out / "run"
    done = subprocess.run([sys.executable, "-m", "compress.cli", "run", "--recipe", str(path), "--out", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True)
    report_file = run_dir / "report.json"
    if not report_file.exists():
        return {"exit": done.returncode, "stderr": done.stderr[-3000:], "ok": False}
    report = json.loads(report_file.read_text())
    rows = {r["name"]: {"provider": r.get("provider"), "runtime": r.get("runtime"), "precision": r["precision"],
                        "accuracy": r["accuracy"], "p50_ms": {b: s["p50"] for b, s in r["latency_ms"].items()}}
            for r in report["variants"]}
    return {"exit": done.returncode, "summary": done.stdout[-3000:], "rows": rows,
            "budget": {k: report["budget"].get(k) for k in ("chosen", "shipped", "meets", "rule")},
            "fp16": report.get("fp16"), "latency_measured_on": report.get("latency_measured_on"),
            "environment": report["environment"], "stages": [(s["name"], s["wall_s"]) for s in report["stages"]],
            "ok": done.returncode in (0, 1) and all(r["provider"] == CUDA for r in rows.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--pipeline", action="store_true", help="also run `compress run --target gpu` (1 epoch)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run on a CPU-only box with a short bench (every check falls back, and fails)")
    args = parser.parse_args()
    import onnxruntime

    if CUDA not in onnxruntime.get_available_providers() and not args.allow_cpu:
        print(f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider: pip install onnxruntime-gpu "
              "(or --allow-cpu to smoke-test this script)", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    files = build(out)
    results = {"onnxruntime": onnxruntime.__version__, "available": onnxruntime.get_available_providers(),
               "load": check_load(files, out), "fp16": check_fp16(files),
               "bench": check_bench(files, quick=args.allow_cpu)}
    if args.pipeline:
        results["pipeline"] = check_pipeline(out)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))
    failed = [k for k, v in results.items() if isinstance(v, dict) and not v.get("ok", True)]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}; details in {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
