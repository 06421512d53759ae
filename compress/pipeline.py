"""Runs the stages in order over a content-keyed cache; every artifact lands in the run directory."""
from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import compress
from compress import distributed
from compress.cache import StageCache, StageRecord, stage_key
from common.errors import CompressError, GateFailed
from compress.recipe import Recipe
from compress.shipping import compile_stage, finish_report, onnx_candidates


WORKDIR_PREFIX = ".work-"


def log(message: str) -> None:
    if distributed.is_main():
        print(message, file=sys.stderr, flush=True)


@dataclass
class RunContext:
    recipe: Recipe
    out_dir: Path
    cache: StageCache
    records: list[tuple[StageRecord, bool]] = field(default_factory=list)

    def stage(self, name: str, key: str, body: Callable[[], tuple[list[Path], dict[str, Any]]]) -> StageRecord:
        """Run `body` unless a finished stage with the same key and intact outputs exists.

        Under torchrun every rank runs the body (training is data-parallel); rank 0 alone writes the outputs
        and the record, and the others wait for it before reading them.
        """
        cached = self.cache.lookup(name, key)
        if cached is not None:
            log(f"[{name}] cached ({cached.wall_s:.1f}s saved)")
            self.records.append((cached, True))
            return cached
        log(f"[{name}] running")
        start = time.perf_counter()
        outputs, metrics = body()
        wall = time.perf_counter() - start
        if distributed.is_main():
            record = self.cache.store(name, key, outputs, metrics, wall)
        distributed.barrier()
        if not distributed.is_main():
            record = self.cache.lookup(name, key)
            if record is None:
                raise CompressError(f"[{name}] rank {distributed.rank()} cannot see rank 0's outputs in {self.out_dir}")
        log(f"[{name}] done in {record.wall_s:.1f}s")
        self.records.append((record, False))
        return record


def _section(recipe: Recipe, name: str) -> dict[str, Any]:
    return dataclasses.asdict(getattr(recipe, name))


def load_dataset(recipe: Recipe):
    from bench.datasets import DatasetError, load_fashion_mnist

    d = recipe.data
    try:
        return load_fashion_mnist(d.path, val_size=d.val_size, calib_size=d.calib_size,
                                  limit_train=d.limit_train, limit_test=d.limit_test, seed=recipe.seed)
    except DatasetError as e:
        raise CompressError(str(e)) from None


RECIPE_KIND = {"image": "CNN", "text": "Transformer"}


def usable_target(name: str, kind: str = "image"):
    """The target `name`, or a one-line CompressError when it is unknown, does not take `kind` models ("image" or
    "text") or cannot be built here (checked before any training, not after)."""
    from targets import get_target, names

    target = get_target(name)  # a TargetError is a CompressError: one line, exit 2
    if kind not in target.MODEL_KINDS:
        raise CompressError(f"{RECIPE_KIND[kind]} recipes compile for --target {' / '.join(names(kind))} in this "
                            f"version, not {name!r}")
    ok, why = target.available()
    if not ok:
        raise CompressError(f"target {name!r} cannot be built here: {why}")
    return target


def prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test.{os.getpid()}"  # one per process: ranks probing one file raced
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CompressError(f"--out {out_dir} is not writable: {e.strerror or e}") from None
    if distributed.is_main():
        remove_stale_temporaries(out_dir)
    distributed.barrier()
    return out_dir


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files and work dirs left by a run that was killed mid-write; never read, safe to delete."""
    import shutil

    for path in out_dir.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
    for path in out_dir.glob(WORKDIR_PREFIX + "*"):
        shutil.rmtree(path, ignore_errors=True)


def run(recipe: Recipe, out_dir: Path) -> dict[str, Any] | None:
    """The whole train-then-shrink pipeline; returns the report (also written to out_dir).

    Under torchrun, ranks other than 0 return None once the training stages are done."""
    distributed.init()
    try:
        if recipe.model.is_text:
            from compress.text_pipeline import run_text

            return run_text(recipe, out_dir)
        return _run(recipe, out_dir)
    finally:
        distributed.shutdown()


def _run(recipe: Recipe, out_dir: Path) -> dict[str, Any] | None:
    import torch

    from compress import checkpoints, export, prune, quantize, train
    from compress.distill import make_kd_loss
    from models import build_model

    out_dir = prepare_out_dir(out_dir)
    target = usable_target(recipe.target.name)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_dataset(recipe)
    log(f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test {len(data.test)}, "
        f"input {data.input_shape}, {data.num_classes} classes")
    ctx = RunContext(recipe, out_dir, StageCache(out_dir))
    m = recipe.model
    model_options = ({"factory": m.factory} if m.arch == "custom" else
                     {"width": m.width, "stages": m.stages, "blocks_per_stage": m.blocks_per_stage})

    def new_model():
        try:
            return build_model(recipe.model.arch, data.input_shape, data.num_classes, **model_options)
        except ValueError as e:
            raise CompressError(str(e)) from None

    def loop(epochs: float, lr: float):
        t = recipe.train
        return train.LoopConfig(epochs, t.batch_size, lr, t.weight_decay, t.optimizer, t.label_smoothing)

    version = compress.__version__
    # -- train -----------------------------------------------------------------------------------
    baseline_pt = out_dir / "baseline.pt"
    train_key = stage_key("train", version, recipe.seed, data.fingerprint, _section(recipe, "data"),
                          _section(recipe, "model"), _section(recipe, "train"))

    def do_train():
        train.seed_everything(recipe.seed)
        model = new_model()
        t = recipe.train
        curve = train.fit(model, data.train, loop(t.epochs, t.lr), seed=recipe.seed, label="train")
        checkpoints.save_checkpoint(model, baseline_pt)
        return [baseline_pt], {"val_accuracy": train.accuracy(model, data.val), "loss_curve": curve,
                               "params": prune.count_params(model)}

    train_rec = ctx.stage("train", train_key, do_train)
    teacher = checkpoints.load_checkpoint(new_model(), baseline_pt)
    if train_rec.metrics["val_accuracy"] < 1.5 / data.num_classes:
        raise GateFailed(f"baseline reached only {train_rec.metrics['val_accuracy']:.3f} validation accuracy "
                         "(near chance); raise train.epochs or check the data")

    # -- prune, then fine-tune without a teacher (the ablation's "pruned" row) ------------------------
    student_source = baseline_pt
    prune_key = stage_key("prune", version, train_key, _section(recipe, "prune"))
    pruned_raw_pt, pruned_pt = out_dir / "pruned.raw.pt", out_dir / "pruned.pt"
    if recipe.prune.enabled and recipe.prune.ratio > 0:
        def do_prune():
            train.seed_everything(recipe.seed)
            p = recipe.prune
            example = torch.from_numpy(data.train.x[:2])
            batch = (torch.from_numpy(data.train.x[:256]), torch.from_numpy(data.train.y[:256]))
            step_epochs = p.finetune_epochs / p.iterative_steps

            def between_steps(model, step):
                train.fit(model, data.train, loop(step_epochs, p.lr), seed=recipe.seed + 10 + step,
                          label=f"prune step {step + 1}")

            result = prune.prune(teacher, p, example, data.num_classes, taylor_batch=batch,
                                 between_steps=between_steps if step_epochs > 0 else None)
            acc_pruned = train.accuracy(result.model, data.val)
            raw = copy.deepcopy(result.model)
            prune.make_sparsity_permanent(raw)
            checkpoints.save_checkpoint(raw, pruned_raw_pt)
            curve = []
            if p.finetune_epochs > 0:
                curve = train.fit(result.model, data.train, loop(step_epochs, p.lr), seed=recipe.seed + 1,
                                  label="fine-tune")
            prune.make_sparsity_permanent(result.model)
            checkpoints.save_checkpoint(result.model, pruned_pt)
            metrics = {
                "method": p.method, "params_before": result.params_before, "params_after": result.params_after,
                "channels_before": result.channels_before, "channels_after": result.channels_after,
                "weight_sparsity": prune.weight_sparsity(result.model),
                "val_accuracy_pruned": acc_pruned, "val_accuracy": train.accuracy(result.model, data.val),
                "loss_curve": curve,
            }
            if p.method != "channels":
                metrics["note"] = prune.SPARSITY_NOTE
            return [pruned_raw_pt, pruned_pt], metrics

        prune_rec = ctx.stage("prune", prune_key, do_prune)
        student_source = pruned_raw_pt
    else:
        prune_rec = None

    # -- distill: the same pruned weights, taught by the full model ---------------------------------
    distill_key = stage_key("distill", version, prune_key, train_key, _section(recipe, "distill"),
                            student_source.name)
    student_pt = out_dir / "student.pt"
    if recipe.distill.enabled:
        def do_distill():
            from compress.distill import FeatureDistiller

            train.seed_everything(recipe.seed)
            student = checkpoints.load_checkpoint(new_model(), student_source)
            if recipe.prune.method != "channels" and prune_rec is not None:
                prune.keep_zeros(student)
            before = train.accuracy(student, data.val)
            distiller, soft = None, None
            trainee = student
            if recipe.distill.feature_weight > 0:  # needs the teacher's feature map of every batch
                distiller = FeatureDistiller(student, teacher, torch.from_numpy(data.train.x[:2]))
                trainee = distiller
            else:  # one teacher pass instead of one per epoch: distillation then costs what fine-tuning does
                soft = train.predict_logits(teacher, data.train.x)
            curve = train.fit(trainee, data.train, loop(recipe.distill.epochs, recipe.distill.lr),
                              seed=recipe.seed + 2, label="distill", teacher=teacher, teacher_logits=soft,
                              loss_fn=make_kd_loss(recipe.distill, distiller))
            if distiller is not None:
                distiller.detach_hooks()
            prune.make_sparsity_permanent(student)
            checkpoints.save_checkpoint(student, student_pt)
            return [student_pt], {"val_accuracy_before": before, "val_accuracy": train.accuracy(student, data.val),
                                  "loss_curve": curve}

        distill_rec = ctx.stage("distill", distill_key, do_distill)
    else:
        distill_rec = None
        student_pt = pruned_pt if prune_rec is not None else baseline_pt

    # -- from here on a single process: export, quantize, compile and bench run on rank 0 -------------
    distributed.barrier()
    distributed.shutdown()
    if not distributed.is_main():
        return None

    student_name, student_val = choose_student(prune_rec, distill_rec)
    metadata = {
        "producer": f"edge-compress {version}", "recipe": recipe.name, "dataset": data.name,
        "labels": list(data.labels),
        "preprocess": {"scale": 1 / 255.0, "mean": data.mean, "std": data.std, "layout": "NCHW"},
    }
    if target.SOURCE == "torch":  # mobile: litert-torch converts each checkpoint itself
        from compress.torch_compile import run_torch_target

        return run_torch_target(
            ctx, target, data, {"baseline": baseline_pt, "pruned": pruned_pt, "distilled": student_pt},
            lambda pt: checkpoints.load_checkpoint(new_model(), pt), calib=data.calib.x, check=data.val.x,
            metadata=metadata, upstream_key=stage_key(distill_key, train_key, student_name),
            student_name=student_name, student_val=student_val)

    # -- export -----------------------------------------------------------------------------------
    fp32_models, export_key, onnx_paths = export_plan(recipe, distill_key, baseline_pt,
                                                      pruned_pt if prune_rec is not None else None,
                                                      student_pt if recipe.distill.enabled else None)

    def do_export():
        parity = {}
        for name, pt in fp32_models.items():
            model = checkpoints.load_checkpoint(new_model(), pt)
            export.export_onnx(model, data.calib.x, onnx_paths[name])
            parity[name] = export.check_parity(model, onnx_paths[name], data.val.x[:512],
                                               atol=recipe.target.parity_atol).to_dict()
        return list(onnx_paths.values()), {"parity": parity}

    export_rec = ctx.stage("export", export_key, do_export)

    def run_qat(checkpoint: Path, workdir: Path) -> Path:
        from compress import qat

        log("[quantize] PTQ missed the bar: quantization-aware fine-tuning")
        train.seed_everything(recipe.seed)
        model = qat.prepare(checkpoints.load_checkpoint(new_model(), checkpoint), data.calib.x)
        train.fit(model, data.train, loop(recipe.quantize.qat_epochs, recipe.quantize.qat_lr), seed=recipe.seed + 3,
                  label="qat", teacher=teacher, loss_fn=make_kd_loss(recipe.distill))
        qat.calibrate(model, data.calib.x)
        path = workdir / "qat.fp32.onnx"
        export.export_onnx(qat.strip(model), data.calib.x, path)
        return path

    # -- quantize ---------------------------------------------------------------------------------
    int8_sources = {"int8": "baseline"}
    if student_name != "baseline":
        int8_sources["compressed"] = student_name
    quant_key = stage_key("quantize", version, export_key, _section(recipe, "quantize"), data.fingerprint, student_name)
    int8_paths = {name: out_dir / f"{src}.int8.onnx" for name, src in int8_sources.items()}
    if recipe.quantize.enabled:
        shipped_name = "compressed" if "compressed" in int8_sources else "int8"  # the one the search tunes

        def do_quantize():
            import tempfile

            from bench.accuracy import predict
            from common.compare import top1_agreement
            from compress.search import search_int8
            from runtime import load

            info = {}
            for name, src in int8_sources.items():
                if name == shipped_name:
                    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=out_dir) as work:
                        result = search_int8(onnx_paths[src], int8_paths[name], data.calib.x, data.val.x, data.val.y,
                                             recipe.quantize, Path(work), threads=recipe.bench.threads,
                                             qat=lambda workdir, src=src: run_qat(fp32_models[src], workdir))
                    extra = {"search": result.to_dict()}
                else:
                    quantize.quantize_static_qdq(onnx_paths[src], int8_paths[name], data.calib.x, recipe.quantize)
                    extra = {}
                with load(onnx_paths[src]) as fp32, load(int8_paths[name]) as int8:
                    agreement = top1_agreement(predict(fp32, data.val.x), predict(int8, data.val.x))
                info[name] = {"source": src, "val_top1_agreement_vs_fp32": agreement,
                              "ops": quantize.op_precision(int8_paths[name]), **extra}
            return list(int8_paths.values()), info

        quant_rec = ctx.stage("quantize", quant_key, do_quantize)
    else:
        quant_rec = None

    # -- bench every candidate; the fastest within the run's accuracy budget is compiled for the target ------
    variants = onnx_candidates(onnx_paths, int8_paths if quant_rec else {}, student_name, "static INT8")
    sources = {v.name: v.path for v in variants}
    upstream = quant_key if quant_rec else export_key

    def ship(name: str) -> Path:
        path = compile_stage(ctx, target, sources[name], metadata, upstream_key=upstream,
                             data_fingerprint=data.fingerprint, check=data.val.x[:256])
        return path / "model.onnx" if path.is_dir() else path  # a jetson bundle: the graph it builds from

    return finish_report(ctx, data, variants, export_rec.metrics["parity"], quant_rec.metrics if quant_rec else {},
                         student_name, student_val, ship)


def export_plan(recipe: Recipe, distill_key: str, baseline: Path, pruned: Path | None,
                distilled: Path | None) -> tuple[dict[str, Path], str, dict[str, Path]]:
    """The FP32 checkpoints to export by variant name, the export stage's key and the ONNX path of each."""
    models = {name: path for name, path in (("baseline", baseline), ("pruned", pruned), ("distilled", distilled))
              if path is not None}
    key = stage_key("export", compress.__version__, distill_key, _section(recipe, "target"),
                    {k: v.name for k, v in models.items()})
    return models, key, {name: baseline.parent / f"{name}.onnx" for name in models}


def choose_student(prune_rec: StageRecord | None, distill_rec: StageRecord | None) -> tuple[str, dict[str, float]]:
    """The student that goes on to INT8: whichever of fine-tuned and distilled did better on validation."""
    val = {name: rec.metrics["val_accuracy"] for name, rec in (("pruned", prune_rec), ("distilled", distill_rec))
           if rec is not None}
    return (max(val, key=lambda n: (val[n], n == "distilled")) if val else "baseline"), val
