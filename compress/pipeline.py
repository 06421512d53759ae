"""`compress run`: choose the plug-ins for the recipe (model family, data source, target), then let the driver run
the stages (compress/stages) and ship what the budget picks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import CompressError
from compress.training import distributed
from compress.driver import Run, log, prepare_out_dir, run_stages
from compress.recipe import Recipe

RECIPE_KIND = {"image": "CNN", "text": "Transformer"}


def usable_target(name: str, kind: str = "image"):
    """The target `name`, or a one-line CompressError when it is unknown, does not take `kind` models ("image" or
    "text") or cannot be built here (checked before any training, not after)."""
    from targets import get_target, names

    target = get_target(name)  # a TargetError is a CompressError: one line, exit 2
    if kind not in target.MODEL_KINDS:
        raise CompressError(f"{RECIPE_KIND.get(kind, kind)} recipes compile for --target "
                            f"{' / '.join(names(kind))} in this version, not {name!r}")
    ok, why = target.available()
    if not ok:
        raise CompressError(f"target {name!r} cannot be built here: {why}")
    return target


def require_runtime(recipe: Recipe, target, family) -> None:
    """`target.runtime: litert` on a target that times LiteRT beside its own: a one-line error before any training
    when LiteRT cannot be built here (auto and onnxruntime go on without it and say so)."""
    if recipe.target.runtime != "litert" or getattr(target, "SIBLING", None) is None:
        return
    from compress.stages.litert import sibling_of

    other, why = sibling_of(recipe, target, family)
    if other is None:
        raise CompressError(f"target.runtime litert cannot be built here: {why}")


def run(recipe: Recipe, out_dir: Path) -> dict[str, Any] | None:
    """The whole train-then-shrink pipeline; returns the report (also written to out_dir).

    Under torchrun, ranks other than 0 return None once the training stages are done."""
    distributed.init(recipe.train.device)
    try:
        return _run(recipe, out_dir)
    finally:
        distributed.shutdown()


def _run(recipe: Recipe, out_dir: Path) -> dict[str, Any] | None:
    from compress.plugins import choose, learns_from_data
    from compress.stages import PIPELINE, label, ship, widths

    chosen = choose(recipe)
    family, source = chosen.family, chosen.source
    fitted = family.fit_data(recipe)  # a model that fixes its input (an ONNX file)
    if fitted.data != recipe.data:
        source.check_recipe(fitted.data)  # the one check the fitted data section can change
    recipe = fitted
    target = usable_target(recipe.target.name, family.kind)
    require_runtime(recipe, target, family)
    check_bench_device(recipe, family)
    widths.refuse_under_torchrun(recipe)  # torchrun launched directly; the CLI checks --nproc
    out_dir = prepare_out_dir(out_dir)
    data = family.prepare(recipe, source.load(recipe, learns_from_data(recipe, family)))
    log(family.describe_data(data))
    run_state = Run(recipe, out_dir, family, source, target, data)
    label.check(run_state)
    if not run_stages(run_state, PIPELINE):
        return None
    return ship.finish(run_state)


def check_bench_device(recipe: Recipe, family) -> None:
    """bench.on: the device is reached and can bench this run's candidates, before any training (one line if not)."""
    from bench.device import DeviceError, for_bench

    device = for_bench(recipe.bench)
    if device is None or distributed.rank() != 0:
        return
    if family.kind == "text":
        raise DeviceError("bench.on benches one-input models (images, model-ready rows) in this version; bench text "
                          "models on this machine")
    device.check()
