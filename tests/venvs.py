"""A clean virtual environment holding only the runtime distribution (runtime/pyproject.toml): what an edge device
has. Shared by the distribution test and the SSH device tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DIST = "edge-compress-runtime"


def source_copy(tmp_path: Path) -> Path:
    """runtime/ as committed, minus build leftovers. pip builds a local project in place, which would leave
    build/ and *.egg-info/ in the source tree (and setuptools packs whatever stale modules build/lib holds)."""
    src = tmp_path / "src" / "runtime"
    shutil.copytree(REPO / "runtime", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
    return src


def runtime_venv(venv: Path, work: Path) -> Path:
    """Create `venv` (no system site-packages), pip-install the runtime distribution into it; its python. Skips
    when the package index cannot provide the runtime's dependencies."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # pip keeps the caller's configuration (index, certificates), but nothing from the source tree is on any path
    pip_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                          str(source_copy(work))], capture_output=True, text=True, env=pip_env, cwd=work,
                         timeout=900)
    if pip.returncode != 0:
        text = pip.stdout + pip.stderr
        if any(s in text for s in ("Could not find a version", "No matching distribution", "connection",
                                   "Network is unreachable", "Temporary failure in name resolution")):
            pytest.skip(f"cannot install {DIST}'s build and runtime dependencies from the package index: "
                        f"{text.strip().splitlines()[-1]}")
        pytest.fail(f"pip install failed: {text[-2000:]}")
    return python
