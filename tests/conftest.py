from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.data.idx import FASHION_MNIST_DIR

needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"Fashion-MNIST not found in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)


def small_recipe(**sections):
    """The default recipe shrunk to seconds: a 3k-image subset, narrow model, short schedules."""
    from compress.recipe import (BenchConfig, BudgetConfig, DataConfig, DistillConfig, ModelConfig, PruneConfig,
                                 QuantConfig, Recipe, TargetConfig, TrainConfig)

    base = Recipe(
        name="small-test",
        data=DataConfig(limit_train=3000, limit_test=1000, val_size=500, calib_size=64),
        model=ModelConfig(width=16),
        train=TrainConfig(epochs=2.0, batch_size=64),
        prune=PruneConfig(ratio=0.5, round_to=4, finetune_epochs=1.0),
        distill=DistillConfig(epochs=1.0),
        bench=BenchConfig(batch_sizes=(1, 8), warmup=2, runs=10, rounds=1),
        # an 8-channel student is where INT8 can lose to FP32: keep the shipped file INT8 so that what the tests
        # inspect does not hinge on a timing (the FP32 decision itself is tested in test_search)
        quantize=QuantConfig(fp32_if_faster=False, latency_search=False),  # the probe: test_search_latency and
        # the ONNX-on-photos run in test_image_folder (two extra interleaved latency runs per search)
        # a 16-wide student after one epoch sits 2-4 pt under its baseline on 1,500 held-out rows: wide enough that
        # the structure tests see a run that ships; the budget itself is tested in test_budget
        # which file ships is decided on timings, and under load the baseline can be the fastest: allow_baseline
        # keeps such a run at exit 0, so no test's verdict hangs on which file was faster
        budget=BudgetConfig(max_accuracy_drop=5.0, latency_batch=8, allow_baseline=True),  # b1: launch-bound
        # LiteRT's candidates cost ~50 s of conversions per run: tests/test_runtime_choice.py turns them on
        target=TargetConfig(litert_candidates=False),
    )
    return dataclasses.replace(base, **sections)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> tuple[dict, Path]:
    """One real pipeline run on small data, shared by the tests that inspect its outputs."""
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not found in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)")
    from compress.pipeline import run

    out = tmp_path_factory.mktemp("small-run")
    return run(small_recipe(), out), out
