"""Teach the shrunk student with the full model (knowledge distillation)."""
from __future__ import annotations

from compress.driver import Stage


def outputs(run):
    return {"distilled": run.path("student" + run.family.suffix)}


def body(run, out) -> dict:
    return run.family.distill(run, run.distill_source, out["distilled"])


def enabled(run) -> bool:
    from compress.stages.prune import family_skips

    return run.recipe.distill.enabled and not family_skips(run, "distill")


STAGE = Stage("distill", ("key:prune", "key:train", "recipe:distill", "run:distill_source"), outputs, body,
              enabled=enabled, all_ranks=True)
