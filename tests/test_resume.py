"""Crash safety: kill -9 at random points of `compress run`, rerun, and end with the same figures."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import needs_fashion_mnist, small_recipe

pytestmark = [needs_fashion_mnist, pytest.mark.slow]


def _cli(recipe_path, out):
    return [sys.executable, "-m", "compress.cli", "run", "--recipe", str(recipe_path), "--out", str(out)]


def _accuracies(out):
    """Every candidate's accuracy; the shipped copy (`compressed`) is left out: which candidate ships is decided on
    fresh timings, and near-ties may go either way between runs."""
    report = json.loads((out / "report.json").read_text())
    return {v["name"]: v["accuracy"] for v in report["variants"] if v["name"] != "compressed"}, report


def _offline_prefix() -> list[str]:
    """`unshare -n` runs the command in an empty network namespace (no interfaces but loopback, down)."""
    import shutil

    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


def test_kill_nine_then_resume_gives_identical_figures(tmp_path):
    from compress.recipe import dump_recipe

    recipe = tmp_path / "small.yaml"
    recipe.write_text(dump_recipe(small_recipe()))
    reference = tmp_path / "reference"
    offline = _offline_prefix()
    # the reference run has no network at all where the kernel allows it: nothing is fetched at run time
    done = subprocess.run(offline + _cli(recipe, reference), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    expected, _ = _accuracies(reference)

    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(_cli(recipe, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 14.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        # whatever the kill interrupted, no file under its final name is half-written: every stage record's
        # outputs either match their recorded hashes or the record is absent
        for record in (out / "stages").glob("*.json") if (out / "stages").exists() else []:
            data = json.loads(record.read_text())
            for rel in data["outputs"]:
                assert (out / rel).is_file(), f"{record.name} lists {rel}, which is missing"
    assert kills >= 1
    final = subprocess.run(_cli(recipe, out), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    got, report = _accuracies(out)
    assert got == expected  # same seed, same data: identical figures after any number of kills
    assert not list(out.rglob(".*.tmp*")) and not list(out.glob(".work-*"))  # stale temporaries cleaned
    assert any(s["cached"] for s in report["stages"]) or kills == 3
