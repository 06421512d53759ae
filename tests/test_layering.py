"""Import rules between the packages, read from the source with `ast` (imports inside functions included).

    common/    what every layer may use: imports no other package of ours, nothing heavy anywhere (numpy at most)
    runtime/   ships alone and torch-free: imports no other package of ours; heavy libraries only inside functions
    targets/, bench/, models/   never import compress/ (the pipeline) or tools/
    tools/     experiments, not installed: may import anything, but nothing in the product imports it
"""
from __future__ import annotations

import ast
import fnmatch
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("common", "runtime", "targets", "bench", "models", "compress")
OURS = PRODUCT + ("tools",)
HEAVY = frozenset({"torch", "tensorrt", "ai_edge_litert", "tflite_runtime", "onnx", "transformers", "torch_pruning"})

# package -> the packages of ours it must not import
FORBIDDEN = {
    "common": set(OURS) - {"common"},
    "runtime": set(OURS) - {"runtime"},
    "targets": {"compress", "tools"},
    "bench": {"compress", "tools"},
    "models": {"compress", "tools"},
    "compress": {"tools"},
}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    top: str  # the top-level package imported
    text: str  # the statement as written
    module_level: bool  # runs when the file is imported (not inside a function, not under TYPE_CHECKING)

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}: {self.text}"


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_in_source(source: str, file: Path, package: str) -> list[Import]:
    """Every import in `source`, with whether it runs at import time. Relative imports count as `package`."""
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.Import):
            text = ast.get_source_segment(source, node) or ""
            found.extend(Import(file, node.lineno, a.name.split(".")[0], text, module_level) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            top = package if node.level else (node.module or "").split(".")[0]
            found.append(Import(file, node.lineno, top, ast.get_source_segment(source, node) or "", module_level))
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
            return
        inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=str(file)), True)
    return found


def package_files(package: str) -> list[Path]:
    skip = {"__pycache__", "build", "dist"}
    return sorted(p for p in (ROOT / package).rglob("*.py") if not skip & set(p.relative_to(ROOT).parts))


def package_imports(package: str) -> list[Import]:
    out = []
    for path in package_files(package):
        out += imports_in_source(path.read_text(encoding="utf-8"), path, package)
    return out


def _report(bad: list[Import], rule: str) -> str:
    return f"{rule}:\n" + "\n".join(f"  {i}" for i in bad)


@pytest.mark.parametrize("package", PRODUCT)
def test_package_imports_only_what_its_layer_may(package):
    assert package_files(package), f"no .py files found under {package}/"
    bad = [i for i in package_imports(package) if i.top in FORBIDDEN[package]]
    assert not bad, _report(bad, f"{package}/ must not import {', '.join(sorted(FORBIDDEN[package]))}")


def test_runtime_imports_heavy_libraries_only_inside_functions():
    bad = [i for i in package_imports("runtime") if i.module_level and i.top in HEAVY]
    assert not bad, _report(bad, "runtime/ imports a heavy library at module level (move it into the function "
                                 "that needs it)")


def test_common_imports_nothing_heavy():
    """common/ at module level: the standard library and numpy only; inside functions nothing heavy either."""
    allowed_at_top = set(sys.stdlib_module_names) | {"numpy", "common", "__future__"}
    heavy_anywhere = HEAVY | {"onnxruntime"}
    imports = package_imports("common")
    bad = [i for i in imports if i.top in heavy_anywhere or (i.module_level and i.top not in allowed_at_top)]
    assert not bad, _report(bad, "common/ imports something heavy (module level: stdlib and numpy only)")


def test_tools_are_not_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    included = any(fnmatch.fnmatch("tools", pat) for pat in config.get("include", ["*"]))
    excluded = any(fnmatch.fnmatch("tools", pat) for pat in config.get("exclude", []))
    assert not included or excluded, "pyproject.toml would install tools/ (experiments)"
    for package in PRODUCT:
        assert any(fnmatch.fnmatch(package, pat) for pat in config["include"]), f"{package} is not installed"


def test_the_scan_sees_imports_inside_functions_and_type_checking_blocks():
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "try:\n"
        "    import onnx\n"
        "except ImportError:\n"
        "    onnx = None\n"
        "class A:\n"
        "    import numpy\n"
        "    def f(self):\n"
        "        from compress.cache import stage_key\n"
        "def g():\n"
        "    from . import sibling\n"
        "    h = lambda: __import__('x')\n"
    )
    got = {(i.top, i.line, i.module_level) for i in imports_in_source(source, ROOT / "x.py", "bench")}
    assert got == {("os", 1, True), ("typing", 2, True), ("torch", 4, False), ("onnx", 6, True),
                   ("numpy", 10, True), ("compress", 12, False), ("bench", 14, False)}


MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def test_every_package_keeps_small_functions_and_modules():
    """The house rule of issue 18, in every package of the product: no function over 80 lines, no module over 400."""
    too_long = []
    for package in PRODUCT:
        for path in package_files(package):
            source = path.read_text(encoding="utf-8")
            if source.count("\n") > MAX_MODULE_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        too_long.append(f"{path.relative_to(ROOT)}::{node.name}: {length} lines")
    assert not too_long, too_long


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, at module level or inside functions (`from a import b` counts
    as importing a.b when b is a module, else a)."""
    files = {module_name(p): p for p in package_files(package)}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                wanted = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            else:
                continue
            for target in wanted:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


@pytest.mark.parametrize("package", PRODUCT)
def test_no_import_cycle_inside_a_package(package):
    cycles = import_cycles(module_graph(package))
    assert not cycles, f"{package}/ has import cycles (function-level imports included): {cycles}"


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def _readme_layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```\ncompress/", text.index("## Layout"))
    return text[start : text.index("```", start + 3)]


def test_the_readme_layout_names_every_folder_of_compress_and_no_other():
    import re

    lines = _readme_layout().splitlines()[2:]  # past the fence and the compress/ line
    end = next(i for i, line in enumerate(lines) if not line.startswith(" "))  # where the compress/ subtree ends
    named = {name for line in lines[:end] for name in re.findall(r"([a-z_]+)/", line[:NAME_COLUMN])}
    folders = {p.name for p in (ROOT / "compress").rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert len(named) > 10, "the README's compress/ tree was not found"
    assert named == folders, (f"README layout names {sorted(named - folders)} that are not folders of compress/, "
                              f"and misses {sorted(folders - named)}")


NAME_COLUMN = 26  # the README tree's names stand left of this column, their descriptions right of it
