"""Export every FP32 model of the run to ONNX, each checked against its torch model (for targets that compile
from an ONNX graph)."""
from __future__ import annotations

from compress.driver import Stage


def outputs(run):
    return {f"onnx:{name}": run.path(f"{name}.onnx") for name in run.fp32_checkpoints}


def body(run, out) -> dict:
    parity = {}
    for name, checkpoint in run.fp32_checkpoints.items():
        parity[name] = run.family.export(run, run.family.load(run, checkpoint), out[f"onnx:{name}"])
    return {"parity": parity}


STAGE = Stage("export", ("key:distill", "recipe:target", "run:fp32_checkpoints"), outputs, body,
              enabled=lambda run: run.target.SOURCE == "onnx")
