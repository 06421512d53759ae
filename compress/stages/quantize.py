"""INT8 in the family's flavour: plain for the baseline (`int8`, what the quantizer alone gives) and tuned for the
chosen student (`compressed`), each with its agreement with its FP32 source on validation."""
from __future__ import annotations

from compress.driver import Stage


def sources(run) -> dict[str, str]:
    """INT8 row name -> the FP32 variant it quantizes. Without a student (nothing pruned or distilled: a pretrained
    or ONNX model taken as given) both rows quantize the baseline: the quantizer alone beside the search."""
    return {"int8": "baseline", "compressed": run.student_name}


def outputs(run):
    plan = sources(run)
    plain = "baseline.ptq" if plan["compressed"] == "baseline" else "baseline"
    return {"int8:int8": run.path(f"{plain}.int8.onnx"), "int8:compressed": run.path(f"{plan['compressed']}.int8.onnx")}


def body(run, out) -> dict:
    return {name: run.family.quantize(run, source, run.artifacts[f"onnx:{source}"], out[f"int8:{name}"],
                                      tuned=name == "compressed")
            for name, source in sources(run).items()}


def qat_loss(run) -> dict:
    """QAT, the search's last resort, learns from the teacher with the distill section's loss, the soft term alone on
    unlabelled data."""
    from compress.driver import plain

    d = plain(run.recipe.distill)
    return {"temperature": d["temperature"], "alpha": d["alpha"],
            "soft_only": getattr(run.data, "truth", "labels") == "baseline"}


STAGE = Stage("quantize", ("key:export", "recipe:quantize", "data:fingerprint", "run:student_name", qat_loss), outputs,
              body,
              enabled=lambda run: run.target.SOURCE == "onnx" and run.recipe.quantize.enabled)
