"""The CLI through click's CliRunner: bad input gives one line, a non-zero exit and leaves nothing behind."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from compress.cli.main import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _assert_one_line_error(result, pattern):
    import re

    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: ")
    assert re.search(pattern, text), text


def test_dump_config_prints_effective_recipe():
    result = invoke("run", "--dump-config", "--target", "cpu")
    assert result.exit_code == 0
    assert "name: cnn-fashion" in result.output and "ratio: 0.75" in result.output


@pytest.mark.parametrize(
    "args, files, pattern",
    [
        (["--target", "jetsn"], {}, r"target 'jetsn' unknown; known: cpu, gpu, jetson, mobile"),
        (["--data", "/nonexistent/fashion"], {}, r"--data /nonexistent/fashion: no such folder; give a folder of images"),
        (["--recipe", "RECIPE"], {"RECIPE": "train: {epochs: [1, 2\n"}, r"not valid YAML at line"),
        (["--recipe", "RECIPE"], {"RECIPE": "train: {epohcs: 2}\n"}, r"unknown recipe key 'train.epohcs'; did you mean 'epochs'"),
        (["--recipe", "RECIPE"], {"RECIPE": "train: {epochs: lots}\n"}, r"train.epochs = 'lots' has the wrong type"),
        (["--recipe", "RECIPE"], {"RECIPE": "prune: {ratio: 1.5}\n"}, r"prune.ratio must be in \[0, 1\)"),
        (["--recipe", "RECIPE"], {"RECIPE": "train: {epochs: -2}\n"}, r"train.epochs must be >= 0"),
        (["--recipe", "nosuch-recipe"], {}, r"recipe 'nosuch-recipe' unknown"),
        (["--recipe", "RECIPE"], {"RECIPE": "- a\n- b\n"}, r"must be a YAML mapping"),
        (["--data", "DATADIR"], {"DATADIR/readme.txt": "empty"}, r"Fashion-MNIST file train-images-idx3-ubyte\[.gz\] not found"),
        (["--data", "DATADIR"], {"DATADIR/train-images-idx3-ubyte": "garbage", "DATADIR/train-labels-idx1-ubyte": "x",
                                 "DATADIR/t10k-images-idx3-ubyte": "x", "DATADIR/t10k-labels-idx1-ubyte": "x"},
         r"not an unsigned-byte IDX file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, files, pattern):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    args = [str(tmp_path / a) if a in ("RECIPE", "DATADIR") else a for a in args]
    if "RECIPE" in files:
        args = [a.replace(str(tmp_path / "RECIPE"), str(tmp_path / "RECIPE.yaml")) for a in args]
        (tmp_path / "RECIPE").rename(tmp_path / "RECIPE.yaml")
    out = tmp_path / "out"
    result = invoke("run", "--out", str(out), *args)
    _assert_one_line_error(result, pattern)
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission errors cannot be provoked")
def test_unwritable_out_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    result = invoke("run", "--out", str(locked / "run"))
    _assert_one_line_error(result, r"--out .* is not writable")


def test_out_path_that_is_a_file(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("x")
    result = invoke("run", "--out", str(afile))
    _assert_one_line_error(result, r"--out .*taken is not writable")


def test_targets_lists_every_target():
    result = invoke("targets")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["cpu", "gpu", "jetson", "mobile"]
    assert lines[0].split()[1] == "yes"
