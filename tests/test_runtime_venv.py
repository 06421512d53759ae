"""runtime/ in a clean virtual environment holding only numpy and onnxruntime: no torch, no onnx, no toolkit."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.test_runtime_helpers import LABELS, PREPROCESS, small_cnn

REPO = Path(__file__).resolve().parent.parent
ORT_PIN = "onnxruntime==1.31.1"

_SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    for absent in ("torch", "onnx"):
        assert importlib.util.find_spec(absent) is None, f"{absent} is importable in the clean venv"
    import runtime
    assert "onnxruntime" not in sys.modules
    model, x_path, ref_path = sys.argv[1:4]
    with runtime.load(model, threads=1) as r:
        out = r.infer(np.load(x_path))["logits"]
        labels = r.predict(np.zeros((2, 28, 28), np.uint8))
    np.testing.assert_array_equal(out, np.load(ref_path))
    assert "onnxruntime" in sys.modules and "torch" not in sys.modules
    print("ok", runtime.__file__, labels)
""")


@pytest.mark.slow
def test_runtime_runs_in_a_venv_with_only_numpy_and_onnxruntime(tmp_path):
    import onnxruntime as ort

    model = small_cnn(tmp_path / "m.onnx", metadata={"labels": list(LABELS), "preprocess": PREPROCESS})
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", ort.InferenceSession(str(model)).run(None, {"input": x})[0])

    venv = tmp_path / "venv"
    try:
        _check_in_venv(venv, model, tmp_path)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # a few hundred MB; do not leave it to pytest's tmp rotation


def _check_in_venv(venv: Path, model: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)  # no system site-packages
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "numpy",
                          ORT_PIN], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        text = pip.stdout + pip.stderr
        if any(s in text for s in ("Could not find a version", "No matching distribution", "connection",
                                   "Network is unreachable", "Temporary failure in name resolution")):
            pytest.skip(f"cannot install numpy and {ORT_PIN} from the package index: {text.strip().splitlines()[-1]}")
        pytest.fail(f"pip install failed: {text[-2000:]}")

    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    (tmp_path / "check.py").write_text(_SCRIPT)
    proc = subprocess.run([str(python), str(tmp_path / "check.py"), str(model), str(tmp_path / "x.npy"),
                           str(tmp_path / "ref.npy")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"ok {REPO / 'runtime' / '__init__.py'}")

    # the example edge app runs there too, with runtime/ found from the source tree
    images = tmp_path / "images"
    images.mkdir()
    np.save(images / "a.npy", np.zeros((28, 28), np.uint8))
    app = subprocess.run([str(python), str(REPO / "examples" / "classify_folder.py"), str(model), str(images)],
                         capture_output=True, text=True, env={**env, "PYTHONPATH": ""}, cwd=tmp_path, timeout=300)
    assert app.returncode == 0, app.stderr[-3000:]
    assert app.stdout.startswith("a.npy\t") and "# 1 images classified" in app.stdout
