"""A user's own CNN and a folder of images: `compress run --model pkg:factory --weights W --data FOLDER`.

Input shape and classes come from the data (3 x 64 x 64, 20 class folders), the preprocessing from the recipe's
data.image section into the sidecar, and the shipped file fed raw PNG files through `runtime` scores what the report
says. An unlabelled folder is scored by top-1 agreement with the baseline everywhere."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from compress.cli.main import main
from tests.image_folders import write_folder

pytest.importorskip("PIL", reason="image folders need Pillow (pip install 'edge-compress[images]')")

RECIPE = """
name: folder-test
data: {dataset: image-folder, calib_size: 64, image: {size: 64, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
train: {epochs: %s, batch_size: 32, lr: 0.1}
prune: {ratio: 0.5, round_to: 4, finetune_epochs: 1.0}
distill: {epochs: 1.0}
quantize: {latency_search: false, max_accuracy_drop: 2.0}  # 64 validation rows: one row is 1.56 pt
bench: {batch_sizes: [1, 8], warmup: 2, runs: 10, rounds: 1}
budget: {max_accuracy_drop: 5.0, allow_baseline: true, latency_batch: 8}
target: {litert_candidates: false}
"""


def _weights(tmp_path, trained_on=None):
    """small_convnet for 20 classes as a user ships it (safetensors); trained on `trained_on` when given."""
    import torch
    from safetensors.torch import save_file

    from compress.training.loop import LoopConfig, fit, seed_everything
    from tests.toy_models import small_convnet

    seed_everything(0)
    model = small_convnet((3, 64, 64), 20)
    if trained_on is not None:
        fit(model, trained_on, LoopConfig(4.0, 32, 0.05), seed=0)
    path = tmp_path / "convnet.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    assert all(isinstance(v, torch.Tensor) for v in model.state_dict().values())
    return path


def _run(tmp_path, folder, weights, epochs: float, extra=()):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE % epochs)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--recipe", str(recipe), "--model", "tests.toy_models:small_convnet",
                                       "--weights", str(weights), "--data", str(folder), "--out", str(out), *extra])
    return result, out


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """One run on a labelled 20-class folder of 64 x 64 PNGs, shared by the tests that read its outputs."""
    tmp_path = tmp_path_factory.mktemp("shapes")
    folder = write_folder(tmp_path / "shapes", classes=20, per_class=16)
    result, out = _run(tmp_path, folder, _weights(tmp_path), epochs=10.0)
    assert result.exit_code == 0, result.output
    return folder, out


def test_a_20_class_image_folder_trains_shrinks_and_ships_a_model_that_reads_files(shapes_run):
    from bench.data.splits import pool_splits
    from bench.data.images import find_images
    from runtime import load

    folder, out = shapes_run
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy_metric"] == "accuracy"
    acc = {v["name"]: v["accuracy"] for v in report["variants"]}
    assert acc["baseline"] >= 0.5, acc  # 20 classes: chance is 0.05
    prune = next(s for s in report["stages"] if s["name"] == "prune")["metrics"]
    assert prune["params_after"] < prune["params_before"]

    shipped = out / report["variants"][-1]["artifact"]
    sidecar = json.loads(shipped.with_name(shipped.name + ".json").read_text()) if \
        shipped.with_name(shipped.name + ".json").exists() else None
    with load(shipped) as runner:
        meta = runner.metadata
        assert meta["labels"] == [f"class_{k:02d}" for k in range(20)], sidecar
        assert meta["preprocess"]["size"] == [64, 64] and meta["preprocess"]["mean"] == [0.5, 0.5, 0.5]
        files, labels, names = find_images(folder)
        test = pool_splits(len(files), val_size=5000, test_size=5000, calib_size=64, seed=0, name="x")["test"]
        predicted = runner.predict([files[i] for i in test])  # raw PNG files, preprocessed by the runtime
    truth = [names[labels[i]] for i in test]
    file_accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))
    assert file_accuracy == pytest.approx(acc["compressed"], abs=1e-9)  # the same pixels, the same decisions
    from PIL import Image

    pixels = [np.asarray(Image.open(files[i])) for i in test[:3]]  # decoded by the app: H x W x 3 uint8
    with load(shipped) as runner:
        assert runner.predict(np.stack(pixels)) == predicted[:3]
        assert runner.predict(pixels[0]) == predicted[:1]  # one picture, not 72 grayscale rows


def test_an_unlabelled_folder_is_scored_by_agreement_with_the_pretrained_model(tmp_path):
    from bench.data.images import find_images, read_pixels
    from bench.data.splits import Split
    from runtime.images import ImageSpec

    labelled = write_folder(tmp_path / "labelled", classes=20, per_class=8, seed=1)
    files, y, _ = find_images(labelled)
    x = read_pixels(files, ImageSpec((64, 64), 73, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    weights = _weights(tmp_path, trained_on=Split(x, y))
    photos = write_folder(tmp_path / "photos", classes=20, per_class=6, seed=2, labelled=False)
    result, out = _run(tmp_path, photos, weights, epochs=0)
    assert result.exit_code == 0, result.output
    assert "agreement" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy_metric"] == "top1_agreement_vs_baseline"
    assert report["budget"]["metric"] == "top1_agreement_vs_baseline"
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["baseline"]["accuracy"] == 1.0  # the baseline agrees with itself on every row
    for row in rows.values():  # agreement with the baseline is what `accuracy` holds for unlabelled data
        assert row["accuracy"] == pytest.approx(row["top1_agreement_vs_baseline"], abs=1e-9)
        if row.get("shipped_from", row["name"]) != "baseline":  # the baseline's own logits: SQNR infinite (null)
            assert row["logit_sqnr_db_vs_baseline"] > 0, row
    label = next(s for s in report["stages"] if s["name"] == "label")["metrics"]
    assert label["classes"] == 20  # read from the weights' head: the folder has no classes
    gate = CliRunner().invoke(main, ["check", "--report", str(out / "report.json"),
                                     "--baseline", str(out / "report.json")])
    assert gate.exit_code == 0 and "agreement" in gate.output, gate.output


def test_unlabelled_data_takes_the_model_as_given_and_refuses_one_class_in_one_line(tmp_path):
    """Training on unlabelled data has no meaning: a recipe asking for it goes on with the model as given, and one
    line says so; a one-class folder is refused in one line."""
    photos = write_folder(tmp_path / "photos", classes=3, per_class=4, labelled=False)
    weights = _weights(tmp_path)
    result, out = _run(tmp_path, photos, weights, epochs=1.0)
    assert "[label] photos has no labels: the baseline is the model as given (train.epochs 1 -> 0" in result.output
    assert "Traceback" not in result.output and result.exit_code in (0, 1), result.output[-1500:]
    record = json.loads((out / "stages" / "train.json").read_text())
    assert record["metrics"]["loss_curve"] == []  # nothing was trained
    folder = write_folder(tmp_path / "one", classes=1, per_class=12)
    result, _ = _run(tmp_path, folder, weights, epochs=1.0)
    assert result.exit_code == 2 and "a classifier needs at least two" in result.output


def test_compress_bench_reads_a_folder_with_the_artifacts_own_preprocessing(shapes_run, tmp_path):
    """The shipped model and the baseline's INT8 benched on raw files: accuracy from class folders named like the
    sidecar's labels, and agreement on a flat folder."""
    import shutil

    folder, out = shapes_run
    report = json.loads((out / "report.json").read_text())
    shipped = out / report["variants"][-1]["artifact"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(folder.glob("*/*.png"))[::7]:
        shutil.copy(f, flat / f.name)
    for data, metric in ((folder, "accuracy"), (flat, "top1_agreement_vs_baseline")):
        bench = CliRunner().invoke(main, ["bench", str(shipped), str(out / "baseline.int8.onnx"), "--data", str(data),
                                          "--batch", "1", "--runs", "5", "--rounds", "1",
                                          "--out", str(tmp_path / f"bench-{data.name}")])
        assert bench.exit_code == 0, bench.output
        benched = json.loads((tmp_path / f"bench-{data.name}" / "report.json").read_text())
        assert benched["accuracy_metric"] == metric
        first = benched["variants"][0]
        if metric == "accuracy":  # every image of the folder, fed as the run fed its test rows
            assert 0.5 <= first["accuracy"] <= 1.0 and benched["dataset"]["samples"] == 320
        else:
            assert first["accuracy"] == 1.0 and benched["dataset"]["samples"] == 46


def test_an_onnx_model_takes_photos_at_its_own_input_size_and_is_judged_by_agreement(tmp_path):
    """`compress run --model net.onnx --data photos/`: the images are read at the size the file takes (32 x 32 here,
    not the 224 default), the baseline's predictions stand in for labels, and what ships reads raw files."""
    import torch

    from bench.data.images import find_images, read_pixels
    from bench.data.splits import Split
    from compress.training.loop import LoopConfig, fit, seed_everything
    from runtime import load
    from runtime.images import ImageSpec
    from tests.toy_models import small_convnet

    labelled = write_folder(tmp_path / "labelled", classes=5, per_class=24, size=40, seed=3)
    files, y, _ = find_images(labelled)
    x = read_pixels(files, ImageSpec((32, 32), 37, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    seed_everything(0)
    model = small_convnet((3, 32, 32), 5)
    fit(model, Split(x, y), LoopConfig(4.0, 32, 0.05), seed=0)
    onnx_path = tmp_path / "net.onnx"
    torch.onnx.export(model.eval(), torch.from_numpy(x[:2]), str(onnx_path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, opset_version=17,
                      dynamo=False)
    photos = write_folder(tmp_path / "photos", classes=5, per_class=16, size=40, seed=4, labelled=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--model", str(onnx_path), "--data", str(photos), "--out", str(out),
                                       "--max-accuracy-drop", "5"])
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["data"]["image"]["size"] == 32, report["recipe"]["data"]
    assert report["accuracy_metric"] == "top1_agreement_vs_baseline"
    assert {s["name"] for s in report["stages"]} >= {"label", "train", "export", "quantize"}
    assert "prune" not in {s["name"] for s in report["stages"]}
    assert result.exit_code == 0, result.output  # INT8 of a 5-class convnet stays within 5 pt of agreement
    shipped = out / report["variants"][-1]["artifact"]
    with load(shipped) as runner:
        assert runner.metadata["preprocess"]["size"] == [32, 32]
        assert len(runner.predict(sorted(photos.glob("*.png"))[:4])) == 4


def test_the_class_count_comes_from_the_modules_own_head_not_the_files_key_order(tmp_path):
    from safetensors.torch import save_file
    from torch import nn

    from compress.training.checkpoints import classes_in_weights

    class Net(nn.Module):  # safetensors sorts keys: "classifier" comes before "encoder.fc" in the file
        def __init__(self, classes):
            super().__init__()
            self.encoder = nn.Sequential()
            self.encoder.fc = nn.Linear(8, 16)
            self.classifier = nn.Linear(16, classes)

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in Net(7).state_dict().items()}, str(path))
    assert classes_in_weights(path, Net(2)) == 7


def test_a_model_given_by_path_is_part_of_the_training_key(tmp_path):
    """A model re-saved in place (an ONNX file, a Hugging Face folder) must retrain, not reuse the cached stages."""
    from compress.stages.train import path_digest

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"one")
    before = path_digest(folder)
    (folder / "model.safetensors").write_bytes(b"two")
    assert path_digest(folder) != before
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"a")
    first = path_digest(onnx)
    onnx.write_bytes(b"b")
    assert path_digest(onnx) != first
