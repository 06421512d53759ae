"""Shrink the trained model the family's way, then fine-tune it without a teacher (the ablation's "pruned" row).
The weights before that fine-tuning are kept too: distillation starts from them."""
from __future__ import annotations

from compress.driver import Stage


def outputs(run):
    suffix = run.family.suffix
    return {"pruned.raw": run.path("pruned.raw" + suffix), "pruned": run.path("pruned" + suffix)}


def body(run, out) -> dict:
    return run.family.prune(run, out["pruned.raw"], out["pruned"])


STAGE = Stage("prune", ("key:train", "recipe:prune"), outputs, body,
              enabled=lambda run: run.family.shrinks(run.recipe), all_ranks=True)
