"""The architectures people ship (tests/zoo.py) through every stage: structured pruning through torch-pruning's
dependency graph (depthwise and grouped convolutions keep their groups, squeeze-and-excite and residual adds shrink
together, attention loses whole heads), a pruned model that reloads exactly from its checkpoint, and the whole
pipeline (label -> prune + fine-tune -> distill -> export with parity -> INT8 -> bench) on 32 unlabelled rows of
random-weight models taken as their factories return them (as a pretrained model package would). The whole
pipeline for MobileNetV3 and MNASNet, and LiteRT for them and EfficientNet-B0, are the `extended` tier (outside
the CI suite: `bash scripts/test.sh -m extended`); everything else here runs in CI."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from tests.zoo import ZOO

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geffnet") is None,
                                reason="geffnet not installed (pip install --no-deps geffnet; the test extra has it)")
SHAPE = (3, 32, 32)
CLASSES = 10


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, *SHAPE)).astype(np.float32)


def _pruned(arch: str):
    from compress.pruning.structured import prune
    from compress.recipe import PruneConfig

    torch.manual_seed(0)
    model = ZOO[arch](SHAPE, CLASSES).eval()
    return model, prune(model, PruneConfig(ratio=0.5, round_to=4, finetune_epochs=0), torch.from_numpy(_rows(2)),
                        CLASSES)


def _grouped(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    return {n: (m.in_channels, m.out_channels, m.groups) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1}


@pytest.mark.parametrize("arch", sorted(ZOO))
def test_pruning_shrinks_every_architecture_and_its_checkpoint_reloads_exactly(arch, tmp_path):
    """Logits of the reloaded pruned model (plan replayed on a freshly built one, other random init) equal the
    in-memory pruned model's: the same ops on the same weights, so equal up to nothing (bound: 1e-6 of the largest
    logit, for a kernel picked differently on another layout)."""
    from compress.training.checkpoints import load_checkpoint, save_checkpoint

    model, result = _pruned(arch)
    pruned = result.model
    assert result.params_after < 0.6 * result.params_before, (result.params_before, result.params_after)
    for name, (cin, cout, groups) in _grouped(pruned).items():  # groups follow the channels
        assert cin % groups == 0 and cout % groups == 0, (name, cin, cout, groups)
        was = _grouped(model)[name]
        if was[2] == was[0]:  # depthwise stays depthwise
            assert groups == cin, (name, was, (cin, cout, groups))
    if arch == "small_vit":
        assert result.heads == {"blocks.0.attn": 2, "blocks.1.attn": 2}
    x = torch.from_numpy(_rows(4, seed=1))
    save_checkpoint(pruned, tmp_path / "pruned.pt")
    torch.manual_seed(123)
    reloaded = load_checkpoint(ZOO[arch](SHAPE, CLASSES), tmp_path / "pruned.pt", torch.from_numpy(_rows(2)))
    with torch.no_grad():
        expected, got = pruned.eval()(x), reloaded(x)
    assert got.shape == expected.shape == (4, CLASSES)
    assert float((got - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("arch", sorted(ZOO))
def test_dropping_blocks_then_channels_works_on_every_architecture_and_reloads_exactly(arch, tmp_path):
    """prune.blocks 0.5 with channels 0.5: half of each net's droppable blocks (its residual blocks, a ViT's
    blocks) become SkippedBlock, the rest is channel-pruned through the dependency graph, and the checkpoint
    replays both (bound as above)."""
    from compress.pruning import depth
    from compress.pruning.structured import prune
    from compress.recipe import PruneConfig
    from compress.training.checkpoints import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = ZOO[arch](SHAPE, CLASSES).eval()
    result = prune(model, PruneConfig(ratio=0.5, blocks=0.5, round_to=4), torch.from_numpy(_rows(2)), CLASSES,
                   taylor_batch=(torch.from_numpy(_rows(16, seed=2)), None))
    assert len(result.block_influence) >= 2, result.block_influence  # every zoo net has residual blocks
    n = len(result.block_influence)
    assert len(result.blocks_dropped) == (n + 1) // 2  # half, rounded up
    kept = [b for b in result.block_influence if b not in result.blocks_dropped]
    assert max(result.block_influence[b] for b in result.blocks_dropped) <= min(result.block_influence[b] for b in kept)
    assert all(isinstance(result.model.get_submodule(n), depth.SkippedBlock) for n in result.blocks_dropped)
    x = torch.from_numpy(_rows(4, seed=1))
    save_checkpoint(result.model, tmp_path / "pruned.pt")
    torch.manual_seed(123)
    reloaded = load_checkpoint(ZOO[arch](SHAPE, CLASSES), tmp_path / "pruned.pt", torch.from_numpy(_rows(2)))
    with torch.no_grad():
        expected, got = result.model.eval()(x), reloaded(x)
    assert float((got - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))


def test_a_checkpoint_whose_plan_does_not_fit_is_one_line(tmp_path):
    from common.errors import CompressError
    from compress.training.checkpoints import load_checkpoint, save_checkpoint

    _, result = _pruned("shufflenet_style")
    save_checkpoint(result.model, tmp_path / "pruned.pt")
    with pytest.raises(CompressError, match="its pruning plan does not replay on this model"):
        load_checkpoint(ZOO["resnet18_style"](SHAPE, CLASSES), tmp_path / "pruned.pt", torch.from_numpy(_rows(2)))


def _zoo_recipe(arch: str, rows_path):
    from compress.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": f"zoo-{arch}", "data": {"dataset": "npz", "path": str(rows_path), "val_size": 4, "calib_size": 4},
        "model": {"arch": "custom", "factory": f"tests.zoo:{arch}"},
        "train": {"epochs": 0, "batch_size": 16, "lr": 1e-3, "optimizer": "adamw", "precision": "fp32"},
        "prune": {"ratio": 0.5, "round_to": 4, "finetune_epochs": 1, "lr": 1e-3},
        "distill": {"epochs": 1, "lr": 1e-3},
        "quantize": {"search": False, "latency_search": False, "fp32_if_faster": False},
        "bench": {"batch_sizes": [1], "warmup": 1, "runs": 5, "rounds": 1},
        # random weights on 32 rows: what is checked is that every stage runs, not what ships
        "budget": {"max_accuracy_drop": 100.0, "allow_baseline": True},
        # random-weight deep nets amplify float32 rounding: EfficientNet-B0's distilled student differed from torch
        # by 1.2e-4 of its largest logit (120); the gate's strictness itself is tested in test_pipeline
        "target": {"litert_candidates": False, "parity_atol": 1e-3},
    })


# the two geffnet nets beyond EfficientNet-B0 (the same blocks: depthwise, SE, hard-swish) add a minute to CI:
# `bash scripts/test.sh -m extended` runs them
EXTENDED = {"mobilenetv3", "mnasnet"}


def _tiered(archs, extended=EXTENDED):
    return [pytest.param(a, marks=pytest.mark.extended) if a in extended else a for a in sorted(archs)]


@pytest.mark.parametrize("arch", _tiered(ZOO))
def test_every_stage_runs_on_the_architecture(arch, tmp_path):
    from compress.pipeline import run

    np.savez(tmp_path / "rows.npz", x=_rows(32))
    report = run(_zoo_recipe(arch, tmp_path / "rows.npz"), tmp_path / "out")
    ran = {s["name"] for s in report["stages"] if not s["cached"]}
    assert {"label", "prune", "distill", "export", "quantize", "bench"} <= ran, ran
    assert all(p["ok"] for p in report["parity"].values()), report["parity"]
    assert report["budget"]["shipped"] is not None
    prune = next(s["metrics"] for s in report["stages"] if s["name"] == "prune")
    assert prune["params_after"] < prune["params_before"]


def test_dropped_blocks_go_through_every_stage(tmp_path):
    """prune.blocks on EfficientNet-B0 (depthwise, squeeze-and-excite, blocks in Sequential stages): the pruned
    checkpoint reloads for distillation, exports with parity and quantizes; the report names the blocks."""
    import dataclasses

    from compress.pipeline import run

    np.savez(tmp_path / "rows.npz", x=_rows(32))
    recipe = _zoo_recipe("efficientnet_b0", tmp_path / "rows.npz")
    recipe = dataclasses.replace(recipe, prune=dataclasses.replace(recipe.prune, blocks=0.5))
    report = run(recipe, tmp_path / "out")
    prune = next(s["metrics"] for s in report["stages"] if s["name"] == "prune")
    assert len(prune["blocks_dropped"]) == 5 and len(prune["block_influence"]) == 9, prune["block_influence"]
    assert all(p["ok"] for p in report["parity"].values()), report["parity"]
    assert {"distill", "export", "quantize", "bench"} <= {s["name"] for s in report["stages"] if not s["cached"]}


_LITERT = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]


@pytest.mark.tflite
@pytest.mark.skipif(bool(_LITERT), reason=f"{', '.join(_LITERT)} not installed (pip install 'edge-compress[tflite]')")
@pytest.mark.parametrize("arch", _tiered(ZOO, EXTENDED | {"efficientnet_b0"}))
def test_the_pruned_architecture_converts_to_litert_with_parity(arch, tmp_path):
    """FP32 LiteRT of the pruned model against torch on 8 rows: max abs diff within 1e-3 of the largest logit
    (XNNPACK reassociates; its float32 kernels stay orders of magnitude inside that)."""
    from targets import tflite, tflite_convert

    _, result = _pruned(arch)
    model, rows = result.model.eval(), _rows(8, seed=2)
    path = tflite_convert.convert_fp32(model, rows[:1], tmp_path / "m.tflite")
    parity = tflite.check_parity(model, path, rows)
    with torch.no_grad():
        largest = float(model(torch.from_numpy(rows)).abs().max())
    assert parity.samples == 8 and parity.max_abs_diff <= 1e-3 * max(1.0, largest), parity.to_dict()


@pytest.mark.parametrize("rows, labelled", [(8, False), (16, False), (16, True), (100, True)])
def test_any_amount_of_data_runs_or_refuses_in_one_line(rows, labelled, tmp_path):
    """8 rows (refused: too few to calibrate on and judge against), 16 (4-row validation and test splits, 8 to train
    on) and 100: every stage runs, or the run stops with one `error:` line; never a traceback or an unexpected
    error. Labelled rows here are noise, so a trained baseline may stop at the near-chance gate: one line too."""
    import yaml
    from click.testing import CliRunner

    from compress.cli.main import main

    x = _rows(rows, seed=3)
    np.savez(tmp_path / "rows.npz", **({"x": x, "y": np.arange(rows) % 3} if labelled else {"x": x}))
    recipe = _zoo_recipe("shufflenet_style", tmp_path / "rows.npz").to_dict()
    recipe["train"]["epochs"] = 1.0 if labelled else 0.0
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["run", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "unexpected" not in result.output, result.output[-2000:]
    if result.exit_code:
        assert result.exit_code in (1, 2) and result.output.strip().splitlines()[-1].startswith("error: ")
    else:
        assert (tmp_path / "out" / "report.json").is_file()
