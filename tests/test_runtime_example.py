"""examples/classify_folder.py: an edge app on runtime/ alone classifies a folder of Fashion-MNIST images."""
from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import runtime
from bench.data.idx import FASHION_MNIST_DIR
from tests.test_runtime_helpers import LABELS, fit_linear_classifier, linear_classifier

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "classify_folder.py"

pytestmark = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                reason=f"Fashion-MNIST not found in {FASHION_MNIST_DIR} "
                                       "(apt-get install dataset-fashion-mnist)")


def _example():
    spec = importlib.util.spec_from_file_location("classify_folder", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(image: np.ndarray, filter_type: int) -> bytes:
    """An 8-bit grey PNG with every row encoded with one filter type (0 none, 1 sub, 2 up, 3 average, 4 Paeth)."""
    h, w = image.shape
    img = image.astype(np.int32)
    rows = []
    for y in range(h):
        prev = img[y - 1] if y else np.zeros(w, np.int32)
        a = np.concatenate([[0], img[y, :-1]])
        c = np.concatenate([[0], prev[:-1]])
        if filter_type == 0:
            pred = np.zeros(w, np.int32)
        elif filter_type == 1:
            pred = a
        elif filter_type == 2:
            pred = prev
        elif filter_type == 3:
            pred = (a + prev) // 2
        else:
            p = a + prev - c
            pa, pb, pc = abs(p - a), abs(p - prev), abs(p - c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, c))
        rows.append(bytes([filter_type]) + bytes(((img[y] - pred) & 0xFF).astype(np.uint8)))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A linear classifier fitted on 6,000 training images (numpy, about a second), and 40 test images."""
    from bench.data.idx import load_fashion_mnist_raw

    raw = load_fashion_mnist_raw(None)
    w, b = fit_linear_classifier(raw["train_images"][:6000], raw["train_labels"][:6000])
    model = linear_classifier(tmp_path_factory.mktemp("ex") / "linear.onnx", w, b)
    return model, raw["test_images"][:40], raw["test_labels"][:40]


def test_classify_folder_matches_predict_and_is_accurate(tmp_path, trained):
    model_path, images, labels = trained
    folder = tmp_path / "images"
    folder.mkdir()
    names = []
    for i, image in enumerate(images):  # the same images in every format the app reads
        name = f"img{i:02d}"
        kind = i % 4
        if kind == 0:
            np.save(folder / f"{name}.npy", image)
        elif kind == 1:
            (folder / f"{name}.pgm").write_bytes(b"P5\n# Fashion-MNIST\n28 28\n255\n" + image.tobytes())
        elif kind == 2:
            (folder / f"{name}.pgm").write_bytes(b"P2 28 28 255\n" + " ".join(map(str, image.ravel())).encode())
        else:
            (folder / f"{name}.png").write_bytes(_png(image, (i // 4) % 5))
        names.append(name)
    (folder / "notes.txt").write_text("not an image; ignored")

    with runtime.load(model_path) as r:
        expected = r.predict(images)
    app = _example()
    with runtime.load(model_path) as r:
        results = list(app.classify_folder(r, folder))
    assert [n.rsplit(".", 1)[0] for n, *_ in results] == names
    assert all(err == "" for *_, err in results), [r for r in results if r[3]]
    got = [label for _, label, _, _ in results]
    assert got == expected  # every format decodes to the same pixels, so the labels equal runtime.predict's
    assert all(ms > 0 for _, _, ms, _ in results)
    accuracy = np.mean([LABELS.index(g) == y for g, y in zip(got, labels)])
    assert accuracy >= 0.65, f"top-1 accuracy {accuracy:.2f} on 40 test images; a linear model gets about 0.8"

    # and as a program: one line per image plus a summary, exit status 0
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(model_path), str(folder)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[1] for line in lines[:-1]] == expected
    assert all(line.endswith(" ms") for line in lines[:-1])
    assert lines[-1].startswith("# 40 images classified, median ")


def test_npy_batches_bad_images_and_bad_model(tmp_path, trained):
    model_path, images, _ = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "batch.npy", images[:3])
    np.save(folder / "big.npy", np.zeros((32, 32), np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (folder / "broken.pgm").write_bytes(b"P5 28 28 255\n" + bytes(100))
    app = _example()
    with runtime.load(model_path) as r:
        results = {name: (label, err) for name, label, _, err in app.classify_folder(r, folder)}
        expected = r.predict(images[:3])
    assert [results[f"batch.npy[{i}]"][0] for i in range(3)] == expected
    assert "the model expects [28, 28]" in results["big.npy"][1]
    assert "PNG without IHDR or IDAT" in results["broken.png"][1]
    assert "truncated" in results["broken.pgm"][1]

    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(bad_model), str(folder)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: artifact ") and "\n" == proc.stderr[-1:]
    assert "Traceback" not in proc.stderr
