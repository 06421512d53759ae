"""Bad data gives one clear error, through the API and through the CLI."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from bench.data.idx import FASHION_MNIST_LABELS, read_idx
from bench.data.splits import DatasetError, split_image_dataset
from compress.cli.main import main


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_dataset(directory, train_labels, test_labels, *, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 255, (len(train_labels), 28, 28)),
        "train-labels-idx1-ubyte": np.asarray(train_labels),
        "t10k-images-idx3-ubyte": rng.integers(0, 255, (len(test_labels), 28, 28)),
        "t10k-labels-idx1-ubyte": np.asarray(test_labels),
    }
    for name, arr in parts.items():
        data = _idx(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def _split(train_y, test_y, val_size=10):
    raw = {"train_images": np.zeros((len(train_y), 28, 28), np.uint8), "train_labels": np.asarray(train_y),
           "test_images": np.zeros((len(test_y), 28, 28), np.uint8), "test_labels": np.asarray(test_y)}
    return split_image_dataset("t", raw, FASHION_MNIST_LABELS, 0.5, 0.5, val_size=val_size, calib_size=4,
                               limit_train=None, limit_test=None, seed=0)


@pytest.mark.parametrize(
    "train_y, test_y, val_size, message",
    [
        ([], [1, 2], 1, r"the train split is empty"),
        (list(range(10)) * 5, [], 1, r"the test split is empty"),
        ([3] * 50, [3, 3], 10, r"the training split holds a single class"),
        (list(range(10)) * 5 + [12], [1], 10, r"train labels must lie in \[0, 9\], found 0..12"),
        (list(range(10)) * 5, [-1, 2], 10, r"test labels must lie in \[0, 9\]"),
        (list(range(10)), [1], 10, r"leave nothing after a validation split of 10"),
    ],
    ids=["empty-train", "empty-test", "one-class", "label-too-large", "label-negative", "val-eats-train"],
)
def test_bad_splits(train_y, test_y, val_size, message):
    with pytest.raises(DatasetError, match=message):
        _split(np.array(train_y, np.int64), np.array(test_y, np.int64), val_size)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"not an unsigned-byte IDX file"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x02ab", r"not an unsigned-byte IDX file"),  # float IDX, not uint8
        (b"\x00\x00\x08\x03\x00\x00", r"truncated \(header incomplete\)"),
        (_idx(np.zeros((4, 28, 28)))[:-100], r"truncated or padded: expected 3136 bytes of data, found 3036"),
        (gzip.compress(_idx(np.zeros((2, 2))))[:-8], r"cannot read IDX file"),
    ],
    ids=["empty", "wrong-dtype", "short-header", "truncated-data", "truncated-gzip"],
)
def test_bad_idx_files(tmp_path, content, message):
    path = tmp_path / ("f.gz" if content[:2] == b"\x1f\x8b" else "f")
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_idx(path)


def test_nan_calibration_data_is_refused(tmp_path):
    from common.errors import CompressError
    from compress.quantization.static import quantize_static_qdq
    from compress.recipe import QuantConfig

    calib = np.full((4, 1, 28, 28), np.nan, np.float32)
    with pytest.raises(CompressError, match="calibration data holds NaN or Inf"):
        quantize_static_qdq(tmp_path / "in.onnx", tmp_path / "out.onnx", calib, QuantConfig())
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    "train_y, test_y, message",
    [
        ([4] * 6000, [4, 4], r"the training split holds a single class"),
        (list(range(10)) * 600, [0, 11], r"test labels must lie in \[0, 9\], found 0..11"),
    ],
    ids=["cli-one-class", "cli-label-out-of-range"],
)
def test_bad_dataset_through_the_cli(tmp_path, train_y, test_y, message):
    _write_dataset(tmp_path / "data", train_y, test_y)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--data", str(tmp_path / "data"), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert __import__("re").search(message, lines[0])
    assert not [p for p in out.rglob("*") if p.is_file()]
