"""Lean imports: the runtime, the CLI's start-up and the light packages (common, bench, targets) pull in no
heavy library when imported."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"torch", "onnxruntime", "tensorrt", "ai_edge_litert", "tflite_runtime", "onnx", "transformers"}


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_runtime_is_torch_free():
    loaded = _modules_after("import runtime")
    assert not {"torch", "onnxruntime", "tensorrt", "ai_edge_litert", "tflite_runtime"} & loaded


def test_cli_start_up_does_not_import_torch():
    loaded = _modules_after("import compress.cli.main")
    assert "torch" not in loaded and "onnxruntime" not in loaded


def _common_modules() -> str:
    """Every module of common/ (the room every layer imports, so each must stay light)."""
    folder = Path(__file__).resolve().parent.parent / "common"
    return ", ".join(["common"] + [f"common.{m.name}" for m in pkgutil.iter_modules([str(folder)])])


@pytest.mark.parametrize("package", ["common", "bench", "targets"])
def test_light_packages_import_nothing_heavy(package):
    modules = _common_modules() if package == "common" else package
    loaded = {name.split(".")[0] for name in _modules_after(f"import {modules}")}
    assert not HEAVY & loaded, f"import {modules} loads {sorted(HEAVY & loaded)}"
