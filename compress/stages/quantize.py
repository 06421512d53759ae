"""INT8 in the family's flavour: plain for the baseline (`int8`, what the quantizer alone gives) and tuned for the
chosen student (`compressed`), each with its agreement with its FP32 source on validation."""
from __future__ import annotations

from compress.driver import Stage


def sources(run) -> dict[str, str]:
    """INT8 row name -> the FP32 variant it quantizes."""
    student = run.student_name
    return {"int8": "baseline", **({"compressed": student} if student != "baseline" else {})}


def outputs(run):
    return {f"int8:{name}": run.path(f"{source}.int8.onnx") for name, source in sources(run).items()}


def body(run, out) -> dict:
    plan = sources(run)
    tuned = "compressed" if "compressed" in plan else "int8"  # the one the search tunes
    return {name: run.family.quantize(run, source, run.artifacts[f"onnx:{source}"], out[f"int8:{name}"],
                                      tuned=name == tuned)
            for name, source in plan.items()}


STAGE = Stage("quantize", ("key:export", "recipe:quantize", "data:fingerprint", "run:student_name"), outputs, body,
              enabled=lambda run: run.target.SOURCE == "onnx" and run.recipe.quantize.enabled)
