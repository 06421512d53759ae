"""Targets behind one protocol and one registry: the built-ins satisfy it, `targets.names()` is the only list of
target names, and a toy target defined here (no edit to compress/ or targets/) ships a real run once registered."""
from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import targets
from common.errors import CompressError
from targets import Artifact, OnnxTarget, Target, TargetError, TargetSpec, TorchTarget
from tests.conftest import needs_fashion_mnist, small_recipe

REPO = Path(__file__).resolve().parent.parent
BUILT_IN = ["cpu", "gpu", "jetson", "mobile"]
# the modules that once kept their own lists of target names
FORMER_LISTS = ["compress/recipe/__init__.py", "compress/cli/main.py", "compress/pipeline.py", "compress/driver.py",
                "compress/shipping/budget.py"]


# -- the toy target: an ONNX target written the way a user would, against the public API only ----------------
class ToyOnnxTarget:
    """Copies the graph for ONNX Runtime, runs the copy on `check` and compares it with the source."""

    NAME = "toy-onnx"
    RUNTIME = "onnxruntime"
    SOURCE = "onnx"
    MODEL_KINDS = frozenset({"image"})

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def available(self) -> tuple[bool, str]:
        return True, "toy: the ONNX graph, copied, for ONNX Runtime"

    def compile(self, onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict, *, check=None) -> Artifact:
        from common.atomic import atomic_path, write_json
        from common.compare import Bars, compare
        from runtime import load, sidecar_path

        self.calls.append({"source": Path(onnx_path), "check": check, "spec": spec})
        if check is None:
            raise TargetError("toy-onnx target: no check inputs given")
        out = Path(out_dir) / "toy.onnx"
        with atomic_path(out) as tmp:
            shutil.copyfile(onnx_path, tmp)
            with load(onnx_path) as ref, load(tmp) as copy:
                feeds = targets.check_feeds(check, ref.inputs, 16)
                parity = compare(next(iter(ref.infer(feeds).values())), next(iter(copy.infer(feeds).values())),
                                 Bars(atol=1e-5, min_agreement=1.0))
            if not parity.ok:
                raise TargetError(f"toy-onnx: the copy differs from the source: {parity.why}")
        meta = {**metadata, "target": spec.name, "runtime": self.RUNTIME, "toy_parity": parity.to_dict()}
        write_json(sidecar_path(out), meta)
        return Artifact(out, spec.name, self.RUNTIME, meta)


@pytest.fixture
def toy():
    """The toy registered for one test; the registry is as before afterwards, whatever the test did."""
    before = targets.names()
    target = ToyOnnxTarget()
    targets.register(target.NAME, target)
    try:
        yield target
    finally:
        for name in set(targets.names()) - set(before):
            targets.unregister(name)
        assert targets.names() == before


def _cli_targets() -> list[str]:
    from compress.cli.main import main

    result = CliRunner().invoke(main, ["targets"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [line.split()[0] for line in result.output.splitlines()]


# -- the protocol ----------------------------------------------------------------------------------------------
def test_built_ins_satisfy_the_protocol():
    assert targets.names() == BUILT_IN
    for name in targets.names():
        t = targets.get_target(name)
        assert isinstance(t, Target), name
        assert targets.protocol_problems(t, name) == [], name
        assert t.NAME == name and isinstance(t.RUNTIME, str) and t.RUNTIME
        assert t.SOURCE in targets.SOURCES and set(t.MODEL_KINDS) <= set(targets.MODEL_KINDS)
        assert isinstance(t, OnnxTarget if t.SOURCE == "onnx" else TorchTarget), name
        ok, why = t.available()
        assert isinstance(ok, bool) and isinstance(why, str) and why


def test_model_kinds_come_from_the_targets():
    assert targets.names("text") == ["cpu", "mobile"]
    assert targets.names("image") == BUILT_IN


def test_a_text_recipe_asks_the_registry(toy):
    from compress.pipeline import usable_target

    for name in ("gpu", "toy-onnx"):
        with pytest.raises(CompressError, match=rf"Transformer recipes compile for --target cpu / mobile in this "
                                                rf"version, not '{name}'"):
            usable_target(name, "text")
    assert usable_target("toy-onnx", "image") is toy


# -- names() is the single source -----------------------------------------------------------------------------
def name_lists(source: str, known: set[str]) -> list[tuple[int, list[str]]]:
    """(line, names) of every tuple / list / set literal of two or more string constants that are all target
    names, every dict literal with two or more target names as keys, and every string that lists two target
    names in a row ("cpu, gpu", "cpu / mobile": a help text or message written out by hand)."""
    alternatives = "|".join(re.escape(n) for n in sorted(known, key=len, reverse=True))
    in_text = re.compile(rf"(?<![\w-])({alternatives})(?:, | / | \| | or | and )({alternatives})(?![\w-])")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = in_text.search(node.value)
            if m:
                found.append((node.lineno, [m.group(1), m.group(2)]))
            continue
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
            items = [k for k in items if isinstance(k, ast.Constant) and k.value in known]
        else:
            continue
        values = [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if len(values) >= 2 and len(values) == len(items) and set(values) <= known:
            found.append((node.lineno, values))
    return sorted(found)


def test_the_scan_finds_lists_of_target_names():
    src = ('x = name in ("gpu", "jetson")\nT = Literal["cpu", "gpu", "jetson", "mobile"]\nd = {"cpu": 1, "mobile": 2}\n'
           'ok = ("cpu", "cuda")\nalso_ok = ["cpu"]\nhelp = "Target: cpu, gpu, jetson"\n'
           'fine = "the cpu target, or gpu-ish / mobile-first wording"\n')
    assert name_lists(src, set(BUILT_IN)) == [(1, ["gpu", "jetson"]), (2, ["cpu", "gpu", "jetson", "mobile"]),
                                              (3, ["cpu", "mobile"]), (6, ["cpu", "gpu"])]


def test_names_is_the_only_list_of_target_names():
    known = set(targets.names())
    files = sorted({REPO / f for f in FORMER_LISTS} | set((REPO / "compress").rglob("*.py"))
                   | set((REPO / "bench").rglob("*.py")) | set((REPO / "targets").rglob("*.py")))
    registry = REPO / "targets" / "__init__.py"
    bad = {str(f.relative_to(REPO)): hits for f in files if f != registry
           for hits in [name_lists(f.read_text(encoding="utf-8"), known)] if hits}
    assert not bad, f"lists of target names outside targets.names(): {bad}"


# -- registering ----------------------------------------------------------------------------------------------
def test_register_checks_the_protocol_and_unregister_restores(toy):
    assert targets.names() == BUILT_IN + ["toy-onnx"]
    assert targets.get_target("toy-onnx") is toy and isinstance(toy, OnnxTarget)
    assert targets.availability()["toy-onnx"] == (True, "toy: the ONNX graph, copied, for ONNX Runtime")
    assert _cli_targets() == BUILT_IN + ["toy-onnx"]
    with pytest.raises(TargetError, match=r"target 'toy-onnx' is already registered; pass replace=True"):
        targets.register("toy-onnx", ToyOnnxTarget())

    class NoCompile:
        NAME, RUNTIME, SOURCE, MODEL_KINDS = "half", "onnxruntime", "onnx", frozenset({"image"})

        def available(self):
            return True, ""

    with pytest.raises(TargetError, match=r"cannot register target 'half': SOURCE 'onnx' needs compile\(\.\.\.\)"):
        targets.register("half", NoCompile())
    with pytest.raises(TargetError, match=r"cannot register target 'other': NAME is 'toy-onnx', registered as 'other'"):
        targets.register("other", ToyOnnxTarget())
    # a module path is imported and checked on first use
    targets.register("cpu-again", "targets.onnxruntime_cpu")
    with pytest.raises(TargetError, match=r"target 'cpu-again' \(targets.onnxruntime_cpu\) is not a target: NAME is "
                                          r"'cpu', registered as 'cpu-again'"):
        targets.get_target("cpu-again")
    assert targets.availability()["cpu-again"][0] is False
    targets.unregister("cpu-again")
    assert "half" not in targets.names() and "other" not in targets.names()


def test_unregistered_toy_is_gone():
    assert "toy-onnx" not in targets.names() and _cli_targets() == BUILT_IN


def test_the_chosen_target_is_checked_against_the_registry(toy):
    from compress.plugins import choose
    from compress.recipe import RecipeError, recipe_from_dict

    with pytest.raises(RecipeError, match=r"target.name = 'jetsn' is not allowed; expected one of 'cpu', 'gpu', "
                                          r"'jetson', 'mobile', 'toy-onnx' \(did you mean 'jetson'\?\)"):
        choose(recipe_from_dict({"target": {"name": "jetsn"}}))
    with pytest.raises(RecipeError, match=r"\(did you mean 'toy-onnx'\?\)"):
        choose(recipe_from_dict({"target": {"name": "toy-onx"}}))
    assert choose(recipe_from_dict({"target": {"name": "toy-onnx"}})).family.name == "image"
    with pytest.raises(TargetError, match=r"target 'jetsn' unknown; known: cpu, gpu, jetson, mobile, toy-onnx "
                                          r"\(did you mean 'jetson'\?\)"):
        targets.get_target("jetsn")


def test_an_unregistered_name_is_not_a_recipe_target():
    from compress.plugins import choose
    from compress.recipe import RecipeError, recipe_from_dict

    with pytest.raises(RecipeError, match=r"target.name = 'toy-onnx' is not allowed; expected one of 'cpu', 'gpu', "
                                          r"'jetson', 'mobile'"):
        choose(recipe_from_dict({"target": {"name": "toy-onnx"}}))


# -- a real run through the toy ---------------------------------------------------------------------------------
@needs_fashion_mnist
def test_a_registered_toy_target_ships_a_real_run(toy, tmp_path):
    from compress.pipeline import run
    from compress.recipe import TargetConfig

    out = tmp_path / "run"
    report = run(small_recipe(target=TargetConfig(name="toy-onnx")), out)
    assert report["target"] == "toy-onnx"
    compressed = next(v for v in report["variants"] if v["name"] == "compressed")
    shipped = out / compressed["artifact"]
    assert shipped == out / "target" / "toy-onnx" / "toy.onnx" and shipped.is_file()
    chosen = next(v for v in report["variants"] if v["name"] == compressed["shipped_from"])
    assert shipped.read_bytes() == (out / chosen["artifact"]).read_bytes()

    assert len(toy.calls) == 1
    check = toy.calls[0]["check"]
    assert isinstance(check, np.ndarray) and check.ndim == 4 and len(check) > 0
    assert toy.calls[0]["spec"].name == "toy-onnx"
    meta = json.loads((shipped.parent / "toy.onnx.meta.json").read_text())
    assert meta["target"] == "toy-onnx" and meta["toy_parity"]["ok"] is True and meta["labels"]
    assert _cli_targets() == BUILT_IN + ["toy-onnx"]
