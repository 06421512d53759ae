"""Text data: the generic CSV reader, the fine-food loader and their one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from bench.datasets import DatasetError
from bench.text_data import FINE_FOODS_DIRS, load_fine_foods, read_text_csv, stratified_split


def _write(tmp_path, text: str):
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_read_text_csv_maps_labels_in_the_given_order(tmp_path):
    path = _write(tmp_path, 'text,label,extra\n"good, really",pos,1\nbad,neg,2\nfine,pos,3\n')
    texts, y, names = read_text_csv(path, "text", "label", labels=("neg", "pos"))
    assert texts == ("good, really", "bad", "fine") and names == ("neg", "pos")
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 1]
    _, y, names = read_text_csv(path, "text", "label")  # sorted distinct values by default
    assert names == ("neg", "pos") and y.tolist() == [1, 0, 1]


@pytest.mark.parametrize("content, kwargs, match", [
    ("", {}, "is empty; expected a header row"),
    ("text,label\n", {}, "has a header but no rows"),
    ("review,label\na,x\n", {}, "has no column 'text'; columns: review, label"),
    ("text,label\na,x\nb,x\n", {}, "every row has label 'x'; a classifier needs at least two classes"),
    ("text,label\na,x\nb,y\n", {"labels": ("x", "z")}, "label\\(s\\) 'y' not among"),
    ("text,label\na,x\nb\n", {}, "line 3 has fewer fields"),
])
def test_bad_csv_files_give_one_line_errors(tmp_path, content, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        read_text_csv(_write(tmp_path, content), "text", "label", **kwargs)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="not found; pass data.path"):
        read_text_csv(tmp_path / "nope.csv", "text", "label")
    with pytest.raises(DatasetError, match="fine-food reviews .* not found"):
        load_fine_foods(tmp_path)


def test_stratified_split_keeps_class_shares_and_is_seeded():
    y = np.array([0] * 70 + [1] * 30)
    kept, held = stratified_split(y, 0.1, seed=0)
    assert len(held) == 10 and np.bincount(y[held]).tolist() == [7, 3]
    assert not set(kept) & set(held) and len(kept) + len(held) == 100
    assert np.array_equal(held, stratified_split(y, 0.1, seed=0)[1])
    assert not np.array_equal(held, stratified_split(y, 0.1, seed=1)[1])


def test_fine_foods_ships_with_the_project_and_splits_as_documented():
    shipped = FINE_FOODS_DIRS[0]
    assert (shipped / "train.csv").is_file() and "MIT" in (shipped / "README.md").read_text()
    data = load_fine_foods(shipped)
    assert (len(data.train), len(data.val), len(data.test)) == (3600, 400, 1000)
    assert data.labels == ("other", "great")
    assert np.bincount(data.test.y).tolist() == [342, 658]  # README: 658 great / 342 other
    assert np.bincount(np.concatenate([data.train.y, data.val.y])).tolist() == [1400, 2600]
    assert data.fingerprint == load_fine_foods(shipped).fingerprint


def test_text_data_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, bench.text_data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
