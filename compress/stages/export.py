"""Export every FP32 model of the run to ONNX, each checked against its torch model (for targets that compile
from an ONNX graph)."""
from __future__ import annotations

import dataclasses

from compress.driver import Stage


def outputs(run):
    return {f"onnx:{name}": run.path(f"{name}.onnx") for name in run.fp32_checkpoints}


def body(run, out) -> dict:
    parity = {}
    for name, checkpoint in run.fp32_checkpoints.items():
        parity[name] = run.family.export(run, run.family.load(run, checkpoint), out[f"onnx:{name}"])
    return {"parity": parity}


def target_settings(run) -> dict:
    """The target section without `runtime` / `litert_candidates`: what is timed and may ship does not change an
    export."""
    return {k: v for k, v in dataclasses.asdict(run.recipe.target).items() if k not in ("runtime", "litert_candidates")}


STAGE = Stage("export", ("key:distill", target_settings, "run:fp32_checkpoints"), outputs, body,
              enabled=lambda run: run.target.SOURCE == "onnx")
