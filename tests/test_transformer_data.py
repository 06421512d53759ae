"""Text data: the generic CSV reader (one file or two), the fine-food loader and their one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from bench.data.splits import DatasetError, stratified_split
from bench.data.texts import FINE_FOODS_DIRS, load_fine_foods, load_text_dataset, read_text_csv


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


def _one_csv(tmp_path, n_pos: int = 120, n_neg: int = 80):
    rows = [f"good review {i},pos" for i in range(n_pos)] + [f"bad review {i},neg" for i in range(n_neg)]
    order = np.random.default_rng(7).permutation(len(rows))
    path = tmp_path / "one.csv"
    path.write_text("text,label\n" + "".join(rows[i] + "\n" for i in order))
    return path


def test_one_csv_splits_into_disjoint_stratified_train_val_test(tmp_path):
    path = _one_csv(tmp_path)
    data = load_text_dataset("csv", path, None, "text", "label", val_size=20, seed=0)
    parts = (data.train, data.val, data.test)
    assert data.labels == ("neg", "pos")
    assert [len(p) for p in parts] == [140, 20, 40]  # test: 20 % of each class; val: 20 of the other 160
    assert np.bincount(data.test.y).tolist() == [16, 24]  # the file's 80 / 120, a fifth of each
    assert np.bincount(data.val.y).tolist() == [8, 12]  # 20 / 160 of the remaining 64 / 96
    assert np.bincount(data.train.y).tolist() == [56, 84]
    texts = [set(p.texts) for p in parts]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(map(len, texts)) == 200  # every row in exactly one split
    again = load_text_dataset("csv", path, None, "text", "label", val_size=20, seed=0)
    assert again.fingerprint == data.fingerprint and again.test.texts == data.test.texts
    other = load_text_dataset("csv", path, None, "text", "label", val_size=20, seed=1)
    assert other.fingerprint != data.fingerprint and other.test.texts != data.test.texts


def test_one_csv_needs_three_rows_of_every_label(tmp_path):
    path = _write(tmp_path, "text,label\na,x\nb,x\nc,x\nd,y\ne,y\n")
    with pytest.raises(DatasetError, match="label 'y' has 2 row\\(s\\); one CSV is split"):
        load_text_dataset("csv", path, None, "text", "label", val_fraction=0.1)


def test_two_csvs_split_as_before(tmp_path):
    """A test CSV given: every row of it is the test split, val a slice of the training file (unchanged)."""
    train = _one_csv(tmp_path)
    test = _write(tmp_path, "text,label\nnice,pos\nawful,neg\n")
    data = load_text_dataset("csv", train, test, "text", "label", val_size=20, seed=0)
    assert data.test.texts == ("nice", "awful") and (len(data.train), len(data.val)) == (180, 20)


def test_compress_run_with_one_csv_dumps_a_csv_recipe(tmp_path):
    from click.testing import CliRunner

    from compress.cli.main import main

    path = _one_csv(tmp_path)
    result = CliRunner().invoke(main, ["run", "--data", str(path), "--dump-config"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "dataset: csv" in result.output and str(path) in result.output
    assert "test_path: null" in result.output


def test_a_csv_recipe_without_data_path_fails_when_loaded():
    from common.errors import CompressError
    from compress.data.texts import CSV_TEXTS
    from compress.recipe import recipe_from_dict

    recipe = recipe_from_dict({"data": {"dataset": "csv"}, "model": {"arch": "bert"}, "quantize": {"mode": "dynamic"}})
    with pytest.raises(CompressError, match="needs data.path: a CSV with text and label columns"):
        CSV_TEXTS.load(recipe)


def test_text_data_needs_no_torch():
    import subprocess
    import sys

    modules = ", ".join(f"bench.data.{m}" for m in ("files", "idx", "images", "arrays", "texts", "tokens"))
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
