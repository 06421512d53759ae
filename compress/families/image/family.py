"""The image classifier family: the ResNet-style CNN (models/cnn.py) or a user's own module (`model.arch: custom`)
on arrays of images. It trains with cross-entropy (SGD or AdamW, one-cycle), shrinks by structured channel pruning
(torch-pruning), distills on the teacher's logits, and quantizes to static INT8 (QDQ, calibrated)."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from common.errors import CompressError
from compress.families.base import OneInputFamily


class ImageClassifier(OneInputFamily):
    name = "image"
    kind = "image"
    archs: tuple[str, ...] = ("resnet-cnn", "custom")
    suffix = ".pt"
    quantize_modes = ("static",)
    int8_kind = "static INT8"
    described = {"baseline": "uncompressed FP32 baseline", "pruned": "pruned + fine-tuned, no teacher",
                 "distilled": "pruned + distilled"}

    def check_recipe(self, recipe) -> None:
        from compress.recipe import RecipeError

        if recipe.quantize.mode not in self.quantize_modes:
            raise RecipeError("CNN recipes quantize with quantize.mode: static (dynamic INT8 is for Transformers)")

    # -- model and data ---------------------------------------------------------------------------
    def prepare(self, recipe, raw):
        return raw

    def describe_data(self, data) -> str:
        classes = f"{data.num_classes} classes" if data.labelled else "unlabelled (scored by agreement with the baseline)"
        return (f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test {len(data.test)}, "
                f"input {data.input_shape}, {classes}")

    def new_model(self, run, classes: int | None = None):
        """A freshly initialised model for the run's data (input shape and classes from the data)."""
        from models import build_model

        m = run.recipe.model
        options = ({"factory": m.factory} if m.arch == "custom" else
                   {"width": m.width, "stages": m.stages, "blocks_per_stage": m.blocks_per_stage})
        try:
            return build_model(m.arch, run.data.input_shape, classes or run.data.num_classes, **options)
        except ValueError as e:
            raise CompressError(str(e)) from None

    def check_given(self, run) -> None:
        """Unlabelled data need a model that is complete as given: pretrained weights, or a user's factory that
        returns its model pretrained (timm's `pretrained=True`, torchvision's `weights=`): with unlabelled data and
        no --weights there is no other meaning, so one line says so and the run goes on."""
        m = run.recipe.model
        if m.weights:
            return
        if m.arch != "custom":
            raise CompressError(f"{run.data.name} has no labels: a model trained from scratch has nothing to agree "
                                "with; give pretrained weights (--weights FILE) or labelled data")
        from compress.driver import log

        log(f"[label] no --weights: {m.factory} is taken as it returns the model (pretrained); its top-1 labels "
            "the data")

    def given_logits(self, run, splits: dict) -> dict:
        """The pretrained model as given on unlabelled rows (split name -> logits); its classes from its weights'
        head, or from the head of the model its factory returns."""
        from compress.training import loop as train
        from compress.training.checkpoints import classes_in_weights, last_linear_width, load_pretrained

        weights = run.recipe.model.weights
        train.seed_everything(run.recipe.seed)  # as the train stage does: a factory's random parts are the same
        if weights:
            classes = classes_in_weights(Path(weights), self.new_model(run, 2))
            model = load_pretrained(self.new_model(run, classes), Path(weights))
        else:
            model = self.new_model(run, 2)
            classes = last_linear_width(model)
            if classes is None:
                raise CompressError(f"{run.recipe.model.factory} returned a model without a classifier head (a last "
                                    "nn.Linear); give labelled data")
        return {name: train.predict_logits(model.eval(), x) for name, x in splits.items()}

    def load(self, run, path: Path):
        from compress.training.checkpoints import load_checkpoint

        return load_checkpoint(self.new_model(run), path, example_rows(run.data))

    def save(self, model, path: Path) -> None:
        from compress.training.checkpoints import save_checkpoint

        save_checkpoint(model, path)

    def fit(self, run, model, epochs: float, lr: float, *, seed: int, label: str, precision: str | None = None,
            **teaching) -> list[float]:
        """`precision` None: the recipe's train.precision, which every training stage but QAT follows."""
        from compress.training import loop as train

        t = run.recipe.train
        loop = train.LoopConfig(epochs, t.batch_size, lr, t.weight_decay, t.optimizer, t.label_smoothing,
                                precision or t.precision)
        return train.fit(model, run.data.train, loop, seed=seed, label=label, device=self.device(run), **teaching)

    def accuracy(self, run, model) -> float:
        from compress.training.loop import accuracy

        return accuracy(model, run.data.val, device=self.device(run))

    def chance(self, data) -> float:
        return 1.5 / data.num_classes

    # -- train, shrink, distill -------------------------------------------------------------------
    def train(self, run, out: Path) -> dict[str, Any]:
        from compress.pruning import structured as prune
        from compress.training import loop as train

        r = run.recipe
        train.seed_everything(r.seed)
        model = self.new_model(run)
        if r.model.weights:
            from compress.training.checkpoints import load_pretrained

            load_pretrained(model, Path(r.model.weights), new_head=True)  # transfer: the data's own classes
        curve = [] if r.train.epochs == 0 else self.fit(run, model, r.train.epochs, r.train.lr, seed=r.seed,
                                                           label="train")
        self.save(model, out)
        return {"val_accuracy": self.accuracy(run, model), "loss_curve": curve, "params": prune.count_params(model),
                "device": self.device(run)}

    def shrinks(self, recipe) -> bool:
        return recipe.prune.enabled and (recipe.prune.auto or recipe.prune.ratio > 0 or recipe.prune.blocks > 0)

    def prune(self, run, raw_out: Path, pruned_out: Path) -> dict[str, Any]:
        """Channel pruning (iterative steps fine-tuned in between), then fine-tuning without a teacher: the
        ablation's "pruned" row. `raw_out` keeps the weights before that fine-tuning, where distillation starts."""
        from compress.pruning import structured as prune

        r, p = run.recipe, run.recipe.prune
        step_epochs = p.finetune_epochs / p.iterative_steps

        def between_steps(model, step):
            self.fit(run, model, step_epochs, p.lr, seed=r.seed + 10 + step, label=f"prune step {step + 1}")

        result = self._pruned(run, p, between_steps if step_epochs > 0 else None)
        acc_pruned = self.accuracy(run, result.model)
        raw = copy.deepcopy(result.model)
        prune.make_sparsity_permanent(raw)
        self.save(raw, raw_out)
        curve, searched = [], handed_student(run, "pruned", result.model)
        if searched is not None:
            result, curve = dataclasses.replace(result, model=searched[0]), searched[1]
        elif p.finetune_epochs > 0:
            curve = self.fit(run, result.model, step_epochs, p.lr, seed=r.seed + 1, label="fine-tune")
        prune.make_sparsity_permanent(result.model)
        self.save(result.model, pruned_out)
        metrics = {
            "method": p.method, "params_before": result.params_before, "params_after": result.params_after,
            "channels_before": result.channels_before, "channels_after": result.channels_after,
            "weight_sparsity": prune.weight_sparsity(result.model), "kept_whole": result.kept_whole,
            "attention_heads_before": prune.attention_heads(run.teacher), "attention_heads_after": result.heads,
            "blocks_dropped": result.blocks_dropped, "block_influence": result.block_influence,
            "val_accuracy_pruned": acc_pruned, "val_accuracy": self.accuracy(run, result.model), "loss_curve": curve,
            "device": self.device(run), "reused_from_width_search": searched is not None,
        }
        if p.method != "channels":
            metrics["note"] = prune.SPARSITY_NOTE
        return metrics

    def _pruned(self, run, p, between_steps=None, stage: str = "prune"):
        """run.teacher pruned by the settings `p` (a PruneConfig with a number for ratio), BatchNorm statistics
        settled on the training rows; no fine-tuning after the last step."""
        import torch

        from compress.driver import log
        from compress.pruning import structured as prune
        from compress.training import loop as train

        data = run.data
        train.seed_everything(run.recipe.seed)
        batch = (torch.from_numpy(data.train.x[:256]), torch.from_numpy(data.train.y[:256]))
        try:
            result = prune.prune(run.teacher, p, example_rows(data), data.num_classes, taylor_batch=batch,
                                 between_steps=between_steps, device=self.device(run))
        except prune.UntraceableModel as e:
            raise CompressError(str(e)) from None
        if result.blocks_dropped and stage == "prune":  # the width search logs them once for all its widths
            log(f"[{stage}] dropped {len(result.blocks_dropped)} of {len(result.block_influence)} droppable blocks "
                f"(those whose skipping moves the logits least): " + ", ".join(
                    f"{n} ({result.block_influence[n]:.3g} nats)" for n in result.blocks_dropped))
        if result.kept_whole:
            shown = ", ".join(result.kept_whole[:6]) + (f" and {len(result.kept_whole) - 6} more"
                                                        if len(result.kept_whole) > 6 else "")
            log(f"[{stage}] kept whole at ratio {p.ratio:g} (coupled to what cannot shrink, or at round_to already): "
                f"{shown}")
        train.settle_batchnorm(result.model, data.train.x, steps_run=0, device=self.device(run))  # stats changed
        return result

    def pruned_at(self, run, ratio: float):
        """The width search's candidate: run.teacher's channels pruned by `ratio` in one step, not fine-tuned."""
        p = dataclasses.replace(run.recipe.prune, ratio=ratio, iterative_steps=1)
        return self._pruned(run, p, stage="widths").model

    def distill(self, run, source: Path, out: Path) -> dict[str, Any]:
        """The pruned weights, taught by the full model on its logits (and its last feature map when
        `distill.feature_weight` > 0). Unlabelled data: soft targets only (the stand-in labels are the teacher's
        own top-1). `distill.augment` > 0: that many extra random views of each image per epoch, each labelled by
        the teacher as it is drawn."""
        from compress.pruning import structured as prune
        from compress.training import loop as train

        r = run.recipe
        train.seed_everything(r.seed)
        student = self.load(run, source)
        if r.prune.method != "channels" and "prune" in run.done:
            prune.keep_zeros(student)
        before = self.accuracy(run, student)
        searched = handed_student(run, "distilled", student) if source == run.path("pruned.raw" + self.suffix) else None
        if searched is not None:
            student, (d, curve, augmented) = searched
        else:
            d, curve, augmented = self._teach(run, student, r.distill.epochs)
        prune.make_sparsity_permanent(student)
        self.save(student, out)
        return {"val_accuracy_before": before, "val_accuracy": self.accuracy(run, student), "loss_curve": curve,
                "device": self.device(run), "soft_targets_only": d.alpha == 1.0,
                "augmented_views_per_row": d.augment if augmented else 0,
                "reused_from_width_search": searched is not None}

    def train_width(self, run, pruned, epochs: float | None) -> tuple[dict[str, float], dict[str, Any]]:
        """The width search's students, as the prune and distill stages would make them from `pruned` (epochs None:
        their own schedules): validation accuracy of the fine-tuned copy and of the distilled one, and the two
        models (`pruned` itself is distilled in place)."""
        from compress.training import loop as train

        r, scores, students = run.recipe, {}, {}
        if r.prune.finetune_epochs > 0:
            tuned = copy.deepcopy(pruned)
            curve = self.fit(run, tuned, epochs or r.prune.finetune_epochs, r.prune.lr, seed=r.seed + 1,
                             label="fine-tune")
            students["pruned"], scores["pruned"] = (tuned, curve), self.accuracy(run, tuned)
        if r.distill.enabled:
            train.seed_everything(r.seed)
            self.new_model(run)  # as distill() builds its student: the same random state reaches a feature projection
            students["distilled"] = (pruned, self._teach(run, pruned, epochs or r.distill.epochs))
            scores["distilled"] = self.accuracy(run, pruned)
        return scores, students

    def _teach(self, run, student, epochs: float):
        """Distil `student` in place for `epochs`; the distill settings used, the loss curve, whether views were
        drawn."""
        import functools

        from compress.distillation.augment import random_views
        from compress.distillation.losses import FeatureDistiller, make_kd_loss
        from compress.training import loop as train

        r, d = run.recipe, kd_settings(run, epochs=epochs)
        distiller, soft, trainee = None, None, student
        augment = (functools.partial(random_views, channels_last_layout=r.data.image.layout == "NHWC")
                   if d.augment > 0 and run.data.train.x.ndim == 4 else None)
        if d.feature_weight > 0:  # needs the teacher's feature map of every batch
            distiller = FeatureDistiller(student, run.teacher, example_rows(run.data))
            trainee = distiller
        elif augment is None:  # one teacher pass instead of one per epoch: distillation then costs what fine-tuning does
            soft = train.predict_logits(run.teacher, run.data.train.x, device=self.device(run))
        epochs = d.epochs * (1 + d.augment) if augment else d.epochs
        curve = self.fit(run, trainee, epochs, d.lr, seed=r.seed + 2, label="distill", teacher=run.teacher,
                         teacher_logits=soft, loss_fn=make_kd_loss(d, distiller), augment=augment)
        if distiller is not None:
            distiller.detach_hooks()
        return d, curve, augment is not None

    # -- export and INT8 --------------------------------------------------------------------------
    def export(self, run, model, path: Path) -> dict[str, Any]:
        from compress.export import onnx_export as export

        export.export_onnx(model, run.data.calib.x, path)
        return export.check_parity(model, path, run.data.val.x[:512], atol=run.recipe.target.parity_atol).to_dict()

    def quantize(self, run, source: str, fp32: Path, out: Path, *, tuned: bool) -> dict[str, Any]:
        """Static INT8 (QDQ). `tuned`: the searched one (calibration methods, float fallback, QAT as a last
        resort) that may ship; otherwise ONNX Runtime's plain PTQ with the recipe's settings, for comparison."""
        from compress.quantization.post_training import post_training_int8

        qat_device = {}

        def qat(workdir: Path) -> Path:
            qat_device["qat_device"] = self.device(run)  # where quantization-aware fine-tuning ran, when it did
            return self.qat(run, run.fp32_checkpoints[source], workdir)

        result = post_training_int8(run, source, fp32, out, tuned=tuned, qat=qat)
        return {**result, **qat_device}

    def qat(self, run, checkpoint: Path, workdir: Path) -> Path:
        from compress.export import onnx_export as export
        from compress.quantization import qat
        from compress.training import loop as train
        from compress.distillation.losses import make_kd_loss
        from compress.driver import log

        r = run.recipe
        log("[quantize] PTQ missed the bar: quantization-aware fine-tuning")
        train.seed_everything(r.seed)
        model = qat.prepare(self.load(run, checkpoint), run.data.calib.x, device=self.device(run))
        self.fit(run, model, r.quantize.qat_epochs, r.quantize.qat_lr, seed=r.seed + 3, label="qat", precision="fp32",
                 teacher=run.teacher, loss_fn=make_kd_loss(kd_settings(run)))
        qat.calibrate(model, run.data.calib.x, device=self.device(run))
        path = workdir / "qat.fp32.onnx"
        export.export_onnx(qat.strip(model), run.data.calib.x, path)
        return path

    # -- what the targets and the app need --------------------------------------------------------
    def torch_inputs(self, run):
        return run.data.calib.x, run.data.val.x

    def unsupported(self, step: str) -> str | None:
        """None: this family runs every step, labelling unlabelled data with the model as given included."""
        return None



def handed_student(run, name: str, start):
    """The width search's trained `name` student ("pruned": fine-tuned, "distilled") with what its training returned
    (the fine-tuning's loss curve; _teach's settings, curve and whether views were drawn), when the search chose the
    recipe's ratio, trained it as this stage would (same schedule and seeds: retrained, it scored the same
    validation accuracy) and pruned it exactly as `start`, the model the stage would train, was pruned (the same
    pruning plan); None otherwise. Taken once: the stage owns it afterwards."""
    from compress.driver import log
    from compress.pruning.structured import PLAN_ATTR

    handed = run.handoff.get("widths")
    if not handed or handed["ratio"] != run.recipe.prune.ratio or name not in handed["students"]:
        return None
    stage = "prune" if name == "pruned" else "distill"
    if getattr(handed["students"][name][0], PLAN_ATTR, None) != getattr(start, PLAN_ATTR, None):
        log(f"[{stage}] the width search pruned ratio {handed['ratio']:g} otherwise (another pruning plan): "
            "training its student again")
        return None
    log(f"[{stage}] the width search's {name} student at ratio {handed['ratio']:g} is this stage's (trained the "
        "same way): not trained again")
    return handed["students"].pop(name)


def kd_settings(run, **changes):
    """The distill section with `changes`; on unlabelled data the soft term alone (alpha 1: no stand-in label read)."""
    if getattr(run.data, "truth", "labels") == "baseline":
        changes["alpha"] = 1.0
    return dataclasses.replace(run.recipe.distill, **changes)


def example_rows(data):
    """Two real rows (one where the data have one) to trace the model's graph on: training rows first, else any split's."""
    import torch

    for split in (data.train, data.calib, data.val, data.test):
        if len(split.x):
            return torch.from_numpy(split.x[:2])
    raise CompressError(f"{data.name} has no rows to trace the model on")


IMAGE = ImageClassifier()
