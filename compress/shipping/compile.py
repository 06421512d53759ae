"""The candidates a target can ship and compiling the one the budget picks: ONNX graphs (FP32, INT8, FP16) for
targets that compile from ONNX; TensorRT builds its own INT8 from the student's Q/DQ graph."""
from __future__ import annotations
import dataclasses
from pathlib import Path
from typing import Any, Callable


def onnx_candidates(onnx_paths: dict[str, Path], int8_paths: dict[str, Path], student_name: str,
                    int8_kind: str, described: dict[str, str], fp16_paths: dict[str, Path] | None = None) -> list:
    """The ONNX files that may ship: the FP32 baseline and students, the baseline's INT8 (`int8`) and the
    student's (`<student>-int8`), and (GPU targets) the float16 copies `baseline-fp16` / `<student>-fp16`."""
    from bench.variants import Variant

    variants = [Variant("baseline", onnx_paths["baseline"], "fp32", described["baseline"])]
    variants += [Variant(n, onnx_paths[n], "fp32", described[n]) for n in ("pruned", "distilled") if n in onnx_paths]
    if "int8" in int8_paths:
        variants.append(Variant("int8", int8_paths["int8"], "int8", f"baseline, {int8_kind} as the quantizer alone "
                                                                    "gives it"))
    if "compressed" in int8_paths:
        variants.append(Variant(f"{student_name}-int8", int8_paths["compressed"], "int8",
                                f"{described[student_name]} + {int8_kind} (searched)"))
    for name, path in (fp16_paths or {}).items():
        source = name.removesuffix("-fp16")
        variants.append(Variant(name, path, "fp16", f"{described.get(source, source)}, float16 (FP32 inputs/outputs)"))
    return variants


TENSORRT_RULE = ("TensorRT target: the student's Q/DQ INT8 graph when it meets the budget, else the baseline's; only "
                 "when no Q/DQ graph does, the FP32 student, else the baseline. No latency decides: TensorRT picks its "
                 "kernels on the device, and the bench's timings were taken elsewhere")


def tensorrt_choice(rows: list[dict[str, Any]], student_name: str) -> str | None:
    """What a TensorRT target ships, by TENSORRT_RULE (rows: the eligible ones, judged); None when nothing meets."""
    meets = {r["name"] for r in rows if r["budget"]["meets"]}
    order = (f"{student_name}-int8", "int8", student_name, "baseline")
    return next((name for name in order if name in meets), None)


def ships_tensorrt(run) -> bool:
    """Whether the run's target compiles for TensorRT (jetson; gpu where TensorRT exists)."""
    from targets import TargetSpec

    decide = getattr(run.target, "ships_tensorrt", None)
    return bool(decide and decide(TargetSpec(run.recipe.target.name, threads=run.recipe.bench.threads)))


def compile_stage(run, source: Path, metadata: dict[str, Any], *, upstream_key: str, check=None,
                  write_extra: Callable[[Path], list[Path]] | None = None) -> Path:
    """Compile the chosen ONNX file for the target (cached like every stage); returns the artifact's path.
    `check`: real inputs (an array, or a tuple of arrays, one per model input) every target runs its compiled form
    on and compares with the source; `write_extra(target_dir)` writes what else an app needs (a tokenizer) and
    returns those files."""
    from common.digest import file_digest
    from targets import TargetSpec

    recipe = run.recipe
    spec = TargetSpec(recipe.target.name, threads=recipe.bench.threads)
    # the source's bytes: a re-searched INT8 file of the same name must recompile
    inputs = (upstream_key, dataclasses.asdict(spec), source.name, file_digest(source), run.data.fingerprint)
    target_dir = run.out_dir / "target" / recipe.target.name

    def body():
        from runtime import sidecar_path

        meta = {**metadata, "source": source.name}
        artifact = run.target.compile(source, spec, target_dir, meta, check=check)
        files = list(artifact.files) or [artifact.path, sidecar_path(artifact.path)]
        if write_extra is not None:
            files += write_extra(target_dir)
        return files, {"artifact": str(artifact.path.relative_to(run.out_dir)), "runtime": artifact.runtime,
                       "source": source.name}

    return run.out_dir / run.cached("compile", inputs, body).metrics["artifact"]
