"""Where training runs (`train.device`, `compress run --device`): device resolution, ranks against GPUs, the cache
key, the unchanged CPU path, and (marked gpu, skipped without CUDA) CUDA training against the CPU's."""
from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from bench.data.splits import Split
from compress.training import device as dev
from compress.recipe import Recipe, RecipeError, TrainConfig

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason=f"no CUDA device here (torch {torch.__version__}); the GPU checks need one")


def _resolve(setting, *, cuda=False, count=0, local_rank=None):
    return dev.resolve_device(setting, cuda_available=cuda, device_count=count, local_rank=local_rank,
                              build="torch 2.13.0+cpu")


# -- resolution ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, cuda, count, local_rank, expected", [
    ("auto", False, 0, None, "cpu"),
    ("auto", True, 1, None, "cuda:0"),
    ("auto", True, 2, 1, "cuda:1"),  # torchrun: rank on GPU LOCAL_RANK
    ("cpu", True, 2, None, "cpu"),
    ("cpu", True, 2, 1, "cpu"),  # --device cpu under torchrun stays on the CPU even where CUDA exists
    ("cuda", True, 1, None, "cuda:0"),
    ("cuda", True, 4, 3, "cuda:3"),
    ("cuda:1", True, 2, None, "cuda:1"),
])
def test_resolve_device(setting, cuda, count, local_rank, expected):
    assert _resolve(setting, cuda=cuda, count=count, local_rank=local_rank) == expected


@pytest.mark.parametrize("setting, cuda, count, local_rank, message", [
    ("cuda", False, 0, None,
     "--device cuda: no CUDA device here (torch 2.13.0+cpu); use --device cpu or auto"),
    ("cuda:0", False, 0, None, "--device cuda:0: no CUDA device here (torch 2.13.0+cpu); use --device cpu or auto"),
    ("cuda:3", True, 2, None, "--device cuda:3: this machine has 2 CUDA device(s) (cuda:0..cuda:1)"),
    ("cuda", True, 1, 1, "rank with LOCAL_RANK 1 has no GPU: found 1; use fewer processes or --device cpu (gloo)"),
    ("cuda:1", True, 2, 0, "--device cuda:1 pins one GPU; under --nproc each rank uses GPU LOCAL_RANK"),
    ("gpu", True, 1, None, "train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("cuda:x", True, 1, None, "train.device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
])
def test_resolve_device_errors_are_one_line(setting, cuda, count, local_rank, message):
    with pytest.raises(RecipeError) as e:
        _resolve(setting, cuda=cuda, count=count, local_rank=local_rank)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_current_on_this_machine_follows_torch():
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert dev.current("auto") == expected
    assert dev.current("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match=r"--device cuda: no CUDA device here \(torch .+\); use --device cpu"):
            dev.current("cuda")


# -- ranks against GPUs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("nproc, setting, cuda, count, backend", [
    (2, "cpu", True, 8, "gloo"),  # --device cpu: gloo even where CUDA exists
    (2, "auto", False, 0, "gloo"),
    (2, "auto", True, 2, "nccl"),
    (4, "cuda", True, 4, "nccl"),
])
def test_check_ranks_picks_the_backend(nproc, setting, cuda, count, backend):
    assert dev.check_ranks(nproc, setting, cuda_available=cuda, device_count=count) == backend


@pytest.mark.parametrize("nproc, setting, cuda, count, message", [
    (4, "auto", True, 1, "--nproc 4 needs 4 GPUs for NCCL, found 1; use --nproc 1 or --device cpu (gloo)"),
    (4, "cuda", True, 2, "--nproc 4 needs 4 GPUs for NCCL, found 2; use --nproc 2 or --device cpu (gloo)"),
    (2, "cuda", False, 0, "--nproc 2 needs 2 GPUs for NCCL, found 0; use --nproc 1 or --device cpu (gloo)"),
    (2, "cuda:0", True, 2, "--device cuda:0 pins one GPU; with --nproc 2 each rank uses GPU LOCAL_RANK"),
])
def test_more_ranks_than_gpus_is_a_one_line_error(nproc, setting, cuda, count, message):
    with pytest.raises(RecipeError) as e:
        dev.check_ranks(nproc, setting, cuda_available=cuda, device_count=count)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_distributed_init_checks_ranks_and_uses_gloo_for_cpu(monkeypatch):
    """The process group's backend follows train.device, not torch.cuda.is_available(); no group is joined when
    the GPUs do not suffice."""
    import torch.distributed as dist

    from compress.training import distributed

    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: joined.append(backend))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: joined.append(str(d)))
    distributed.init("cpu")
    assert joined == ["gloo"]
    with pytest.raises(RecipeError, match=r"--nproc 2 needs 2 GPUs for NCCL, found 1"):
        distributed.init("auto")
    assert joined == ["gloo"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    distributed.init("auto")
    assert joined == ["gloo", "cuda:1", "nccl"]  # this rank's GPU is set before NCCL starts


def test_tensors_that_cross_ranks_live_on_the_rank_gpu_under_nccl(monkeypatch):
    from compress.training import distributed

    monkeypatch.setattr(distributed, "backend", lambda: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert distributed._collective_device() == torch.device("cuda", 1)
    monkeypatch.setattr(distributed, "backend", lambda: "gloo")
    assert distributed._collective_device() == torch.device("cpu")


def test_cli_refuses_a_missing_gpu_in_one_line(tmp_path):
    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has 8 GPUs")
    from click.testing import CliRunner

    from compress.cli.main import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--device", "cuda", "--nproc", "8", "--out", str(out)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --nproc 8 needs 8 GPUs for NCCL, found "), result.output
    assert not out.exists()  # before any work
    if not torch.cuda.is_available():
        result = CliRunner().invoke(main, ["run", "--device", "cuda", "--out", str(out)])
        assert result.output.strip() == (f"error: --device cuda: no CUDA device here (torch {torch.__version__}); "
                                         "use --device cpu or auto")
        assert not out.exists()
    result = CliRunner().invoke(main, ["run", "--device", "tpu", "--dump-config"])
    assert result.output.strip() == "error: train.device must be auto, cpu, cuda or cuda:N, got 'tpu'"


# -- the recipe field and the cache key -----------------------------------------------------------------------

def test_device_is_in_no_stage_key():
    from compress.driver import declared_key, plain

    base = Recipe()
    assert base.train.device == "auto"
    keys = set()
    for setting in ("auto", "cpu", "cuda", "cuda:1"):
        r = base.replace(train=dataclasses.replace(base.train, device=setting))
        assert "device" not in plain(r.train)
        keys.add(declared_key("train", (r.seed, plain(r.data), plain(r.train))))
    assert len(keys) == 1
    # and a key made before the field existed is the one made now (precision: omitted at its default already)
    before = {f.name: getattr(base.train, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name not in ("device", "precision")}
    assert plain(base.train) == before


def test_recipe_rejects_an_unknown_device():
    with pytest.raises(RecipeError, match="train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        TrainConfig(device="gpu")


# -- the CPU path is unchanged ---------------------------------------------------------------------------------

def _tiny_model(seed=0):
    from models import build_model

    torch.manual_seed(seed)
    return build_model("resnet-cnn", (1, 16, 16), 4, width=8).eval()


def _toy_split(n=256, seed=0) -> Split:
    from tests.test_techniques import _toy_split as quadrants  # the same four-quadrant images

    return quadrants(n, seed)


def test_cpu_training_is_bit_identical_to_the_default_path():
    from compress.training import loop as train

    data, cfg = _toy_split(), train.LoopConfig(1.0, 32, 0.05)
    runs = []
    for device in (None, "cpu"):
        model = _tiny_model()
        curve = train.fit(model, data, cfg, seed=0, label="t", device=device)
        runs.append((curve, model.state_dict(), train.predict_logits(model, data.x, device=device)))
    (curve_a, weights_a, logits_a), (curve_b, weights_b, logits_b) = runs
    assert curve_a == curve_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert np.array_equal(logits_a, logits_b)


def test_cpu_text_training_is_bit_identical_to_the_default_path():
    from compress.families.encoder import training as tt
    from models.transformer import build_encoder
    from tests.test_transformer import TINY, TOKENIZER, _texts

    split = TOKENIZER.encode_split(_texts(128, 0))
    soft = np.random.default_rng(0).normal(size=(len(split), 2)).astype(np.float32)
    runs = []
    for device in (None, "cpu"):
        model = build_encoder(TINY, seed=0)
        curve = tt.fit_text(model, split, tt.TextLoopConfig(epochs=1, batch_size=32, lr=3e-3), seed=0,
                            teacher_logits=soft, device=device)
        runs.append((curve, model.state_dict(), tt.predict_text_logits(model, split, device=device)))
    (curve_a, weights_a, logits_a), (curve_b, weights_b, logits_b) = runs
    assert curve_a == curve_b and np.array_equal(logits_a, logits_b)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_cpu_placement_is_a_no_op():
    t = torch.zeros(3)
    assert dev.to_device(t, "cpu") is t and dev.to_device(t, None) is t
    model = torch.nn.Linear(2, 2)
    weight = model.weight
    with dev.placed("cpu", model, None):
        assert model.weight is weight and model.weight.device.type == "cpu"


def test_image_family_records_the_device_per_stage(tmp_path):
    from compress.families.image.family import IMAGE

    data = types.SimpleNamespace(train=_toy_split(128), val=_toy_split(64, seed=1), input_shape=(1, 16, 16),
                                 num_classes=4)
    recipe = Recipe().replace(train=TrainConfig(epochs=0.5, batch_size=32, lr=0.05, device="cpu"))
    recipe = recipe.replace(model=dataclasses.replace(recipe.model, width=8))
    run = types.SimpleNamespace(recipe=recipe, data=data)
    metrics = IMAGE.train(run, tmp_path / "baseline.pt")
    assert metrics["device"] == "cpu"
    state = torch.load(tmp_path / "baseline.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())


# -- on a GPU --------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
def test_cuda_training_matches_the_cpu_within_a_point():
    from compress.training import loop as train

    # noisy enough that one epoch is not perfect: on the CPU 99.5-99.7 % over seeds 0-2, spread 0.2 pt
    data, val = _toy_split(4096, seed=0), _toy_split(2048, seed=1)
    data = Split(data.x + np.random.default_rng(2).normal(0, 2.5, data.x.shape).astype(np.float32), data.y)
    val = Split(val.x + np.random.default_rng(3).normal(0, 2.5, val.x.shape).astype(np.float32), val.y)
    accuracy = {}
    for device in ("cpu", "cuda:0"):
        model = _tiny_model()
        curve = train.fit(model, data, train.LoopConfig(1.0, 64, 0.05), seed=0, label=device, device=device)
        assert curve[-1] < curve[0]
        assert all(p.device.type == "cpu" for p in model.parameters())  # back on the CPU for checkpoints
        accuracy[device] = train.accuracy(model, val, device=device)
    assert abs(accuracy["cuda:0"] - accuracy["cpu"]) <= 0.01, accuracy


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_distillation_and_text_training_run():
    from compress.families.encoder import training as tt
    from compress.training import loop as train
    from compress.distillation.losses import kd_loss
    from tests.test_transformer import TINY, TOKENIZER, _texts
    from models.transformer import build_encoder

    data = _toy_split(512)
    teacher, student = _tiny_model(0), _tiny_model(1)
    train.fit(teacher, data, train.LoopConfig(1.0, 32, 0.05, precision="bf16"), seed=0, device="cuda:0")
    curve = train.fit(student, data, train.LoopConfig(1.0, 32, 0.05), seed=0, device="cuda:0", teacher=teacher,
                      loss_fn=lambda s, y, t: kd_loss(s, y, t, temperature=2.0, alpha=0.5))
    assert np.isfinite(curve).all()
    split = TOKENIZER.encode_split(_texts(256, 0))
    model = build_encoder(TINY, seed=0)
    losses = tt.fit_text(model, split, tt.TextLoopConfig(epochs=3, batch_size=32, lr=3e-3), seed=0, device="cuda:0")
    assert losses[-1] < losses[0]
    logits = tt.predict_text_logits(model, split, device="cuda:0")
    assert isinstance(logits, np.ndarray) and np.allclose(logits, tt.predict_text_logits(model, split), atol=1e-3)
