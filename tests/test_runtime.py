"""runtime/: the embeddable, torch-free inference API: metadata, infer, validation, threads, predict, options."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime import ArtifactError, BackendMissing, InputError, RuntimeFailure
from tests.test_runtime_helpers import LABELS, PREPROCESS, small_cnn, two_input_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory) -> Path:
    return small_cnn(tmp_path_factory.mktemp("rt") / "cnn.onnx",
                     metadata={"labels": list(LABELS), "preprocess": PREPROCESS})


@pytest.fixture(scope="module")
def cnn(cnn_path):
    with runtime.load(cnn_path, threads=1) as r:
        yield r


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


# -- import isolation -----------------------------------------------------------------------------------------
def test_import_runtime_pulls_in_no_backend_or_torch():
    code = ("import sys, runtime; heavy = ('torch', 'onnxruntime', 'onnx', 'ai_edge_litert', 'tflite_runtime', "
            "'tensorrt'); print(' '.join(m for m in sys.modules if m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"import runtime loaded {out.stdout.strip()}"


# -- metadata and inference -----------------------------------------------------------------------------------
def test_metadata_names_shapes_dynamic_dims_and_dtypes(cnn):
    (inp,), (out,) = cnn.inputs, cnn.outputs
    assert (inp.name, inp.shape, inp.dtype, inp.dim_names[0]) == ("input", (None, 1, 28, 28), np.float32, "batch")
    assert (out.name, out.shape, out.dtype) == ("logits", (None, 10), np.float32)
    assert inp.describe() == "input: float32[batch, 1, 28, 28]" and inp.is_dynamic
    assert cnn.backend == "onnxruntime" and "CPUExecutionProvider" in cnn.providers
    assert "input: float32[batch, 1, 28, 28]" in repr(cnn)


@pytest.mark.parametrize("batch", [1, 4])
def test_infer_matches_onnxruntime_for_dict_and_array(cnn, cnn_path, batch):
    x = _images(batch)
    ref = _reference(cnn_path, x)
    by_dict, by_array = cnn.infer({"input": x}), cnn.infer(x)
    assert list(by_dict) == ["logits"]
    np.testing.assert_array_equal(by_dict["logits"], ref)  # same library, same graph: bitwise equal
    np.testing.assert_array_equal(by_array["logits"], ref)


def test_non_contiguous_input_gives_the_same_result(cnn):
    x = _images(4)
    strided = np.asfortranarray(x)
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(cnn.infer(strided)["logits"], cnn.infer(x)["logits"])


def test_two_inputs_need_a_dict(tmp_path):
    with runtime.load(two_input_model(tmp_path / "two.onnx")) as r:
        assert [(s.name, s.dtype) for s in r.inputs] == [("ids", np.int64), ("mask", np.float32)]
        ids, mask = np.arange(16, dtype=np.int64).reshape(2, 8), np.full((2, 8), 0.5, np.float32)
        np.testing.assert_array_equal(r.infer({"mask": mask, "ids": ids})["out"], ids * 0.5)
        with pytest.raises(InputError, match=r"model has 2 inputs \(ids: int64\[batch, 8\]; mask"):
            r.infer(ids)
        with pytest.raises(InputError, match=r"missing \['mask'\]"):
            r.infer({"ids": ids})


# -- validation: every bad input is an InputError that says what was expected -----------------------------------
_EXPECTED = r"expected input: float32\[batch, 1, 28, 28\]"


@pytest.mark.parametrize("feeds, match", [
    ({"image": np.zeros((1, 1, 28, 28), np.float32)}, r"unknown \['image'\], missing \['input'\]\); " + _EXPECTED),
    ({"input": np.zeros((1, 1, 28, 28), np.float32), "extra": np.zeros(1, np.float32)}, r"unknown \['extra'\]"),
    ({}, r"missing \['input'\]"),
    (np.zeros((1, 1, 28, 28), np.float64), r"input 'input' has dtype float64; " + _EXPECTED),
    (np.zeros((1, 1, 28, 28), np.uint8), r"has dtype uint8"),
    (np.zeros((1, 28, 28), np.float32), r"has rank 3 \(shape \[1, 28, 28\]\); " + _EXPECTED),
    (np.zeros((1, 1, 1, 28, 28), np.float32), r"has rank 5"),
    (np.zeros((1, 1, 28, 27), np.float32), r"has shape \[1, 1, 28, 27\]; .*\(axis 3 must be 28\)"),
    (np.zeros((2, 3, 28, 28), np.float32), r"\(axis 1 must be 1\)"),
    (np.zeros((0, 1, 28, 28), np.float32), r"input 'input' is empty \(shape \[0, 1, 28, 28\]\)"),
    ({"input": [[1.0, 2.0]]}, r"input 'input' must be a numpy array, got list"),
    ([1.0, 2.0], r"inputs must be a numpy array or a dict of them, got list"),
    (None, r"got NoneType"),
])
def test_validation_errors(cnn, feeds, match):
    with pytest.raises(InputError, match=match):
        cnn.infer(feeds)


def test_input_error_is_a_value_error_and_a_runtime_failure(cnn):
    with pytest.raises(ValueError):
        cnn.infer(np.zeros(3, np.float32))
    assert issubclass(InputError, RuntimeFailure)


# -- threads -----------------------------------------------------------------------------------------------------
def test_eight_threads_by_1000_inferences_equal_single_threaded(tmp_path):
    with runtime.load(small_cnn(tmp_path / "t.onnx", seed=3), threads=2) as r:
        inputs = [_images(1, seed=s) for s in range(16)]
        expected = [r.infer(x)["logits"] for x in inputs]
        mismatches, errors, done = [], [], []

        def worker(t: int) -> None:
            try:
                for i in range(1000):
                    k = (i + t) % len(inputs)
                    if not np.array_equal(r.infer(inputs[k])["logits"], expected[k]):
                        mismatches.append((t, i))
                done.append(i + 1)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors, errors[:3]
    assert sum(done) == 8000  # every worker ran its 1,000 inferences
    assert not mismatches, f"{len(mismatches)} of 8000 outputs differ from single-threaded inference"


# -- predict: preprocessing and labels from the sidecar --------------------------------------------------------------
def test_predict_applies_the_sidecar_preprocessing(cnn, cnn_path):
    raw = np.random.default_rng(5).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    x = ((raw.astype(np.float32) / 255 - PREPROCESS["mean"]) / PREPROCESS["std"])[:, None]
    expected = [LABELS[i] for i in _reference(cnn_path, x.astype(np.float32)).argmax(1)]
    assert cnn.predict(raw) == expected
    assert cnn.metadata["labels"] == list(LABELS)


def test_predict_without_sidecar_gives_class_indices(tmp_path):
    with runtime.load(small_cnn(tmp_path / "bare.onnx")) as r:
        assert r.metadata == {}
        labels = r.predict(_images(3))
    assert all(label in {str(i) for i in range(10)} for label in labels) and len(labels) == 3


def test_unreadable_sidecar_is_an_artifact_error(tmp_path):
    path = small_cnn(tmp_path / "m.onnx")
    runtime.sidecar_path(path).write_text("{not json")
    with pytest.raises(ArtifactError, match=r"metadata .*m\.onnx\.meta\.json is unreadable or not JSON"):
        runtime.load(path)


# -- lifecycle and options -------------------------------------------------------------------------------------------
def test_context_manager_closes_and_closed_runner_refuses(cnn_path):
    with runtime.load(cnn_path) as r:
        r.infer(_images(1))
    assert r.closed
    with pytest.raises(RuntimeFailure, match="is closed; load the artifact again"):
        r.infer(_images(1))


def test_options_threads_providers_and_unknown(cnn_path):
    with runtime.load(cnn_path, threads=2, providers=["CPUExecutionProvider"], optimization="basic",
                      spinning=False) as r:
        assert r.providers == ["CPUExecutionProvider"]
        assert r.infer(_images(2))["logits"].shape == (2, 10)
    with pytest.raises(BackendMissing, match=r"provider\(s\) \['NoSuchExecutionProvider'\] not available here"):
        runtime.load(cnn_path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['thread'\] for \.onnx artifacts; known: threads"):
        runtime.load(cnn_path, thread=2)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        runtime.load(cnn_path, threads=0)
    with pytest.raises(ValueError, match="optimization 'max' unknown; known: none, basic, extended, all"):
        runtime.load(cnn_path, optimization="max")
