"""The runtime as its own distribution (runtime/pyproject.toml, edge-compress-runtime): pip builds it and installs
it into a clean virtual environment, which then holds the runtime, numpy and onnxruntime only: no torch, no onnx,
no toolkit. The installed package (not the source tree) loads a compiled artifact and reproduces ONNX Runtime's
logits exactly, and the example edge app runs on it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.test_runtime_helpers import LABELS, PREPROCESS, small_cnn
from tests.venvs import REPO, runtime_venv

_SCRIPT = textwrap.dedent("""
    import importlib.metadata, importlib.util, json, sys, sysconfig
    import numpy as np
    for absent in ("torch", "onnx", "compress", "targets"):
        assert importlib.util.find_spec(absent) is None, f"{absent} is importable in the clean venv"
    import runtime
    assert "onnxruntime" not in sys.modules
    model, x_path, out_path = sys.argv[1:4]
    with runtime.load(model, threads=1, isolate=True) as r:  # isolate: the probe child runs the installed _probe
        np.save(out_path, r.infer(np.load(x_path))["logits"])
        labels = r.predict(np.zeros((2, 28, 28), np.uint8))
    assert "onnxruntime" in sys.modules and "torch" not in sys.modules
    files = sorted(str(f) for f in importlib.metadata.files("edge-compress-runtime") if f.parts[0] == "runtime")
    print(json.dumps({"file": runtime.__file__, "site": sysconfig.get_paths()["purelib"], "labels": labels,
                      "version": runtime.__version__, "dist": importlib.metadata.version("edge-compress-runtime"),
                      "files": files,
                      "dists": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())}))
""")

# `python APP ARGS` as an edge app runs it (sys.path[0] is the app's folder), then which runtime it imported
_RUN_APP = textwrap.dedent("""
    import os, runpy, sys
    app = sys.argv[1]
    sys.argv, sys.path[0] = sys.argv[1:], os.path.dirname(app)
    try:
        runpy.run_path(app, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    print("# runtime from", sys.modules["runtime"].__file__)
    sys.exit(code)
""")


@pytest.mark.slow
def test_runtime_distribution_installs_and_runs_without_torch(tmp_path):
    import onnxruntime as ort

    model = small_cnn(tmp_path / "m.onnx", metadata={"labels": list(LABELS), "preprocess": PREPROCESS})
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    venv = tmp_path / "venv"
    try:
        _check_in_venv(venv, model, tmp_path, reference)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # a few hundred MB; do not leave it to pytest's tmp rotation


def _check_in_venv(venv: Path, model: Path, tmp_path: Path, reference: np.ndarray) -> None:
    python = runtime_venv(venv, tmp_path)

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}  # no PYTHONPATH; cwd outside the repository
    (tmp_path / "check.py").write_text(_SCRIPT)
    proc = subprocess.run([str(python), str(tmp_path / "check.py"), str(model), str(tmp_path / "x.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    site = Path(info["site"])
    assert Path(info["file"]) == site / "runtime" / "__init__.py", info["file"]  # the installed copy, not REPO
    assert site.is_relative_to(venv)
    assert info["dist"] == info["version"] == "0.1.0"
    assert len(info["labels"]) == 2 and set(info["labels"]) <= set(LABELS)
    # the wheel holds package `runtime` with exactly the source folder's modules (no pyproject, no build dirs)
    modules = sorted(f"runtime/{p.name}" for p in (REPO / "runtime").glob("*.py"))
    assert sorted(f for f in info["files"] if f.endswith(".py")) == modules
    assert not {"torch", "onnx", "edge-compress"} & set(info["dists"]), info["dists"]
    # the installed runtime reproduces ONNX Runtime run here on the same artifact: exactly, bit for bit
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), reference)

    # the example edge app runs there too, importing the installed runtime
    images = tmp_path / "images"
    images.mkdir()
    np.save(images / "a.npy", np.zeros((28, 28), np.uint8))
    (tmp_path / "run_app.py").write_text(_RUN_APP)
    app = subprocess.run([str(python), str(tmp_path / "run_app.py"), str(REPO / "examples" / "classify_folder.py"),
                          str(model), str(images)], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert app.returncode == 0, app.stderr[-3000:]
    assert app.stdout.startswith("a.npy\t") and "# 1 images classified" in app.stdout
    assert app.stdout.strip().splitlines()[-1] == f"# runtime from {site / 'runtime' / '__init__.py'}"
