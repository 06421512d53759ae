"""Shrink the trained model the family's way, then fine-tune it without a teacher (the ablation's "pruned" row).
The weights before that fine-tuning are kept too: distillation starts from them."""
from __future__ import annotations

from compress.driver import Stage, log


def outputs(run):
    suffix = run.family.suffix
    return {"pruned.raw": run.path("pruned.raw" + suffix), "pruned": run.path("pruned" + suffix)}


def body(run, out) -> dict:
    return run.family.prune(run, out["pruned.raw"], out["pruned"])


def family_skips(run, step: str) -> bool:
    """Whether the run's family cannot run `step` at all ("prune", "distill": an ONNX model has no torch graph);
    one log line says why."""
    why = run.family.unsupported(step)
    if why:
        log(f"[{step}] skipped: {why}")
    return bool(why)


def enabled(run) -> bool:
    return not (run.recipe.prune.enabled and family_skips(run, "prune")) and run.family.shrinks(run.recipe)


def checkpoint_format(run) -> str:
    """Part of the key: a pruned checkpoint stores its pruning plan (version 2: the dropped blocks too) and settled
    BatchNorm statistics (earlier ones, shapes only or stale statistics, are not reused)."""
    return "pruning-plan-2/batchnorm-settled"


def prune_settings(run) -> dict:
    """The prune section as it shapes the model: with prune.ratio auto, the chosen ratio (compress.stages.widths sets
    it) and not the search's own settings, so a width chosen twice reuses one pruned model."""
    from compress.driver import plain

    return {k: v for k, v in plain(run.recipe.prune).items() if not k.startswith("auto_")}


STAGE = Stage("prune", ("key:train", prune_settings, checkpoint_format), outputs, body, enabled=enabled,
              all_ranks=True)
