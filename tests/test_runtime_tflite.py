"""runtime/ on .tflite artifacts through LiteRT (ai-edge-litert), with tflite-runtime as the fallback."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime import InputError

REPO = Path(__file__).resolve().parent.parent


def _minimal_tflite_header() -> bytes:
    """20 bytes that pass the runtime's flatbuffer header check: root table at 16, its vtable at 8."""
    return struct.pack("<I4sHHI i", 16, b"TFL3", 4, 4, 0, 8)


def test_missing_interpreter_names_the_extra(tmp_path):
    """Without ai-edge-litert and tflite-runtime, loading a .tflite raises BackendMissing naming the extra."""
    path = tmp_path / "m.tflite"
    path.write_bytes(_minimal_tflite_header())
    code = ("import sys; sys.modules['ai_edge_litert'] = None; sys.modules['tflite_runtime'] = None\n"
            "import runtime\n"
            "try:\n    runtime.load(sys.argv[1])\n"
            "except runtime.BackendMissing as e:\n    print('BackendMissing:', e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert out.stdout.startswith("BackendMissing: no TFLite interpreter is installed (ai-edge-litert or "
                                 "tflite-runtime); pip install './runtime[litert]'"), out.stdout



@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    pytest.importorskip("ai_edge_litert.interpreter",
                        reason="ai-edge-litert is not installed (pip install './runtime[litert]')")
    from tests.test_runtime_helpers import LABELS, tflite_dense

    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 16)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    path = tflite_dense(tmp_path_factory.mktemp("tfl") / "dense.tflite", w, b)
    (path.parent / "dense.tflite.meta.json").write_text(json.dumps(
        {"labels": list(LABELS), "preprocess": {"scale": 0.5, "mean": 1.0, "std": 2.0}}))
    return path, w, b


@pytest.mark.tflite
def test_tflite_metadata_and_inference(dense):
    path, w, b = dense
    with runtime.load(path, threads=1) as r:
        assert r.backend == "tflite"
        (inp,), (out,) = r.inputs, r.outputs
        assert (inp.name, inp.shape, inp.dtype) == ("input", (None, 16), np.float32)
        assert (out.name, out.shape, out.dtype) == ("output", (None, 10), np.float32)
        for batch in (1, 5, 2):  # the runner resizes the interpreter when the batch changes
            x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
            np.testing.assert_allclose(r.infer(x)["output"], x @ w.T + b, rtol=1e-5, atol=1e-5)
        with pytest.raises(InputError, match=r"input 'input' has shape \[1, 15\]; expected input: float32\[\?, 16\]"):
            r.infer(np.zeros((1, 15), np.float32))
        with pytest.raises(InputError, match="has dtype float64"):
            r.infer(np.zeros((1, 16)))
        raw = np.arange(32, dtype=np.uint8).reshape(2, 16)
        x = ((raw * 0.5 - 1.0) / 2.0).astype(np.float32)
        from tests.test_runtime_helpers import LABELS

        assert r.predict(raw) == [LABELS[i] for i in (x @ w.T + b).argmax(1)]
    with pytest.raises(runtime.RuntimeFailure, match="is closed"):
        r.infer(np.zeros((1, 16), np.float32))


@pytest.mark.tflite
def test_tflite_threads_share_one_runner(dense):
    path, w, b = dense
    with runtime.load(path) as r:
        inputs = [np.random.default_rng(s).standard_normal((1 + s % 3, 16)).astype(np.float32) for s in range(12)]
        expected = [r.infer(x)["output"] for x in inputs]
        bad, done = [], []

        def worker(t: int) -> None:
            for i in range(250):
                k = (i * 7 + t) % len(inputs)
                if not np.array_equal(r.infer(inputs[k])["output"], expected[k]):
                    bad.append((t, i))
            done.append(250)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert sum(done) == 2000 and not bad


@pytest.mark.tflite
def test_tflite_isolate_and_corrupt(dense, tmp_path):
    path, _, _ = dense
    with runtime.load(path, isolate=True) as r:
        assert r.infer(np.zeros((1, 16), np.float32))["output"].shape == (1, 10)
    data = bytearray(path.read_bytes())
    data[4:8] = b"TFL4"
    (tmp_path / "x.tflite").write_bytes(bytes(data))
    with pytest.raises(runtime.ArtifactError, match="no TFL3 file identifier"):
        runtime.load(tmp_path / "x.tflite")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['providers'\] for \.tflite artifacts; known: threads"):
        runtime.load(path, providers=["CPUExecutionProvider"])


_FUZZ = """
import json, random, sys
import numpy as np
import runtime
data = open(sys.argv[1], "rb").read()
rng = random.Random(7)
counts = {}
for k in range(int(sys.argv[3])):
    b = bytearray(data)
    pos = rng.randrange(len(b))
    if k % 3 == 0:
        b[pos] ^= 1 << rng.randrange(8)
    elif k % 3 == 1:
        b[pos] = rng.randrange(256)
    else:
        b = b[: rng.randrange(1, len(b))]
    path = sys.argv[2] + f"/f{k}.tflite"
    open(path, "wb").write(bytes(b))
    try:
        with runtime.load(path) as r:
            try:
                r.infer(np.zeros((1, 16), np.float32))
                outcome = "ran"
            except runtime.RuntimeFailure:
                outcome = "inference error"
    except runtime.ArtifactError:
        outcome = "refused"
    counts[outcome] = counts.get(outcome, 0) + 1
print(json.dumps(counts))
"""


@pytest.mark.tflite
def test_tflite_bit_flips_never_crash(dense, tmp_path):
    """300 mutated .tflite files in one child process: each runs or raises the runtime's own error."""
    path, _, _ = dense
    proc = subprocess.run([sys.executable, "-c", _FUZZ, str(path), str(tmp_path), "300"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, f"child died with status {proc.returncode}: {proc.stderr[-2000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sum(counts.values()) == 300 and counts.get("refused", 0) >= 60, counts
