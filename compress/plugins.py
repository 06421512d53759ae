"""The plug-ins a recipe names, chosen and checked against it: the model family (compress.families), the data
source (compress.data) and the target (targets). The recipe itself is a schema that knows no registry; every check
that needs one runs here, once, before any work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compress.recipe import RecipeError, registered


@dataclass(frozen=True)
class Plugins:
    family: Any  # compress.families.base.ModelFamily
    source: Any  # compress.data.DataSource


def choose(recipe) -> Plugins:
    """The family and data source `recipe` names, after every cross-check (one-line RecipeError): the names are
    registered, the source and the family accept their settings, and the family takes the source's kind of data."""
    import targets
    from compress import data as data_sources
    from compress import families

    registered("data.dataset", recipe.data.dataset, data_sources.names())
    registered("model.arch", recipe.model.arch, families.archs())
    registered("target.name", recipe.target.name, targets.names())
    source, family = data_sources.get(recipe.data.dataset), families.for_arch(recipe.model.arch)
    source.check_recipe(recipe.data)
    if family.kind != source.kind:
        fits = ", ".join(a for a in families.archs() if families.for_arch(a).kind == source.kind)
        raise RecipeError(f"data.dataset {recipe.data.dataset!r} is {source.kind} data; it needs a model.arch "
                          f"that takes {source.kind} ({fits or 'none registered'})")
    family.check_recipe(recipe)
    from compress.stages.widths import check_recipe as check_width_search

    check_width_search(recipe, family)
    return Plugins(family, source)


def learns_from_data(recipe, family) -> bool:
    """Whether the run learns from training rows (training, pruning's fine-tuning, distillation); if not, a data
    source keeps only calibration rows for training and holds out the rest."""
    distills = recipe.distill.enabled and not family.unsupported("distill")
    return (recipe.train.epochs > 0 and family.unsupported("train") is None) or family.shrinks(recipe) or distills
