"""Every registered model family is what the stages call: a `ModelFamily` implementing each required method, and
the driver and stages call nothing on a family that the base class does not declare."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from compress import families
from compress.families.base import REQUIRED, STEPS, ModelFamily

ROOT = Path(__file__).resolve().parent.parent
ATTRIBUTES = ("name", "kind", "archs", "suffix", "quantize_modes", "int8_kind", "described")
CALLERS = [ROOT / "compress" / f for f in ("driver.py", "pipeline.py", "plugins.py")] + sorted(
    p for d in ("stages", "shipping", "data") for p in (ROOT / "compress" / d).glob("*.py"))


@pytest.mark.parametrize("arch", families.archs())
def test_every_registered_family_implements_the_base_class(arch):
    family = families.for_arch(arch)
    assert isinstance(family, ModelFamily), f"{arch}: {type(family).__name__} is not a ModelFamily"
    missing = [m for m in REQUIRED if getattr(type(family), m) is getattr(ModelFamily, m)]
    assert not missing, f"{arch}: {type(family).__name__} does not implement {missing}"
    for attribute in ATTRIBUTES:
        assert getattr(family, attribute, None) is not None, f"{arch}: no {attribute}"
    assert family.kind in ("image", "text") and arch in family.archs
    assert family.quantize_modes and "baseline" in family.described
    for step in STEPS:
        why = family.unsupported(step)
        assert why is None or (isinstance(why, str) and why and "\n" not in why), (arch, step, why)


def _family_calls(path: Path) -> set[tuple[str, int]]:
    """(attribute, line) for every `family.X` / `run.family.X` / `self.family.X` in `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "family") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "family"):
                found.add((node.attr, node.lineno))
    return found


def test_the_stages_call_only_what_the_base_class_declares():
    declared = set(dir(ModelFamily)) | set(ModelFamily.__annotations__)
    calls = {(p.relative_to(ROOT), attr, line) for p in CALLERS for attr, line in _family_calls(p)}
    assert len(calls) > 20, "the scan found too few family calls: has the layout moved?"
    undeclared = sorted(f"{p}:{line}: family.{attr}" for p, attr, line in calls if attr not in declared)
    assert not undeclared, "called on a family but not declared by ModelFamily:\n" + "\n".join(undeclared)


def test_the_base_class_declares_required_methods_that_raise():
    class Half(ModelFamily):
        name, kind, archs = "half", "image", ("half",)

    half = Half()
    with pytest.raises(NotImplementedError):
        half.train(None, Path("x"))
    assert half.unsupported("label") and half.unsupported("prune") is None
    assert "train" in REQUIRED and "unsupported" not in REQUIRED and "fit_data" not in REQUIRED
