"""Lean imports: the runtime and the CLI's start-up pull in no heavy library."""
from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_runtime_is_torch_free():
    loaded = _modules_after("import runtime")
    assert not {"torch", "onnxruntime", "tensorrt", "ai_edge_litert", "tflite_runtime"} & loaded


def test_cli_start_up_does_not_import_torch():
    loaded = _modules_after("import compress.cli")
    assert "torch" not in loaded and "onnxruntime" not in loaded
