"""An `.onnx` file as the model (`model.arch: onnx`, `model.path`): the post-training path. The graph is taken as
given (no training, pruning or distillation: there is no torch graph), exported as itself and quantized to static
INT8 by the accuracy-aware search, on model-ready rows (the `npz` data source). Before any work the graph is
inspected and a model this path cannot compress is refused in one line that says why and what is supported."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import CompressError
from compress.families.base import OneInputFamily

CONTROL_FLOW = ("Loop", "If", "Scan")
STATE_WORDS = ("state", "hidden", "cache", "past", "memory")
SUPPORTED = "this version compresses single-input classifiers (one float32 input, one N x classes output)"
NO_TORCH = "an ONNX model has no torch graph to {verb}; give the PyTorch model (--model module:factory --weights) " \
           "to {verb} it"


@dataclass(frozen=True)
class GraphInfo:
    """What the checks read from the graph: its one input and one output."""

    input_name: str
    input_shape: tuple[int | None, ...]  # None: a dynamic (or unnamed) dimension
    output_name: str
    output_shape: tuple[int | None, ...] | None  # None: no shape recorded in the graph
    params: int


def _dims(value_info) -> tuple[int | None, ...] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


def _bench_hint(path: Path) -> str:
    return f"time it with `compress bench {path.name} --inputs inputs.npz`"


@functools.lru_cache(maxsize=8)
def _inspect(path: str, mtime_ns: int, size: int) -> GraphInfo:
    import onnx

    p = Path(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a protobuf decode error names nothing useful
        raise CompressError(f"model.path {p}: not a readable ONNX model ({type(e).__name__})") from None
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    outputs = list(graph.output)
    names = ", ".join(i.name for i in inputs)
    if len(inputs) != 1:
        state = [i.name for i in inputs if any(w in i.name.lower() for w in STATE_WORDS)]
        what = f"; {', '.join(state)} looks like recurrent state" if state else ""
        raise CompressError(f"{p.name} has {len(inputs)} inputs ({names}){what}: {SUPPORTED}; {_bench_hint(p)}")
    fed_back = [o.name for o in outputs if any(w in o.name.lower() for w in STATE_WORDS)]
    if len(outputs) != 1 or fed_back:
        outs = ", ".join(o.name for o in outputs)
        raise CompressError(f"{p.name} has {len(outputs)} output{'s' if len(outputs) != 1 else ''} ({outs}), "
                            f"recurrent state or several heads: {SUPPORTED}; {_bench_hint(p)}")
    loops = sorted({n.op_type for n in graph.node if n.op_type in CONTROL_FLOW})
    if loops:
        raise CompressError(f"{p.name} holds control flow ({', '.join(loops)} nodes): {SUPPORTED} with a static "
                            f"graph; {_bench_hint(p)}")
    (given,), (out,) = inputs, outputs
    elem = given.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(elem).lower()
        raise CompressError(f"{p.name}: input {given.name!r} is {kind}, not float32 (token ids, raw bytes): "
                            f"{SUPPORTED}; {_bench_hint(p)}")
    shape, out_shape = _dims(given), _dims(out)
    if out_shape is not None and len(out_shape) != 2:
        raise CompressError(f"{p.name}: output {out.name!r} has rank {len(out_shape)} ({_shown(out_shape)}), not "
                            f"N x classes logits (a segmentation map or boxes is not a classifier's): {SUPPORTED}; "
                            f"{_bench_hint(p)}")
    if shape and shape[0] is not None:
        raise CompressError(f"{p.name}: input {given.name!r} has a fixed batch size {shape[0]}; this version needs "
                            f"a dynamic batch axis (re-export with dynamic_axes={{{given.name!r}: {{0: 'batch'}}}})")
    params = sum(int(_count(i.dims)) for i in graph.initializer)
    return GraphInfo(given.name, shape or (), out.name, out_shape, params)


def _count(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _shown(shape) -> str:
    return "[" + ", ".join("N" if i == 0 and d is None else str(d if d is not None else "?")
                           for i, d in enumerate(shape)) + "]"


def onnx_targets() -> str:
    """The registered targets that compile an ONNX graph, joined for a message."""
    from targets import get_target, names

    return " / ".join(n for n in names() if get_target(n).SOURCE == "onnx")


def graph_info(path: str | Path) -> GraphInfo:
    """The graph's one input and output, or a one-line CompressError naming why this path cannot compress it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise CompressError(f"model.path {p}: no such file (give the .onnx model)") from None
    return _inspect(str(p.resolve()), st.st_mtime_ns, st.st_size)


class OnnxModel(OneInputFamily):
    name = "onnx"
    kind = "image"  # to data sources and targets: one float array in, logits out
    archs: tuple[str, ...] = ("onnx",)
    suffix = ".onnx"
    quantize_modes = ("static",)
    int8_kind = "static INT8"
    described = {"baseline": "the ONNX model as given (FP32)"}

    def check_recipe(self, recipe) -> None:
        """Settings this path cannot honour, and the graph itself (inspected once per file version)."""
        from compress.recipe import RecipeError
        from targets import get_target

        if recipe.quantize.mode not in self.quantize_modes:
            raise RecipeError("an ONNX model quantizes with quantize.mode: static (calibrated QDQ)")
        if recipe.distill.augment:
            raise RecipeError("distill.augment shows a torch student views of the data; an ONNX model is not "
                              "distilled here (set it to 0)")
        target = get_target(recipe.target.name)
        if target.SOURCE != "onnx":
            raise RecipeError(f"target {recipe.target.name!r} converts the torch module ({target.RUNTIME}); an ONNX "
                              f"model has none: use --target {onnx_targets()}, or give the PyTorch model "
                              "(--model module:factory --weights)")
        try:
            graph_info(recipe.model.path)
        except CompressError as e:
            raise RecipeError(str(e)) from None

    def unsupported(self, step: str) -> str | None:
        """Why this family cannot run `step`, or None: it labels unlabelled data, and nothing that needs torch."""
        verbs = {"prune": "prune", "distill": "distil"}
        if step in verbs:
            return NO_TORCH.format(verb=verbs[step])
        if step == "litert":
            return "LiteRT converts the torch module and an ONNX model has none"
        if step == "train":
            return "an ONNX model is taken as given (no torch graph to train)"
        return None

    # -- model and data ---------------------------------------------------------------------------
    def fit_data(self, recipe):
        """Images read from files take the size and layout of the model's input when the recipe leaves
        data.image at its default: the file fixes what it takes, the toolkit's default does not."""
        import dataclasses

        from compress.driver import log
        from compress.recipe import ImageConfig

        image = recipe.data.image
        if recipe.data.dataset != "image-folder" or image != ImageConfig():
            return recipe
        shape = graph_info(recipe.model.path).input_shape[1:]
        layout = "NHWC" if len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3) else "NCHW"
        h, w = (shape[1:] if layout == "NCHW" else shape[:2]) if len(shape) == 3 else (None, None)
        channels = (shape[0] if layout == "NCHW" else shape[-1]) if len(shape) == 3 else None
        if channels == 1:
            raise CompressError(f"{Path(recipe.model.path).name} takes 1-channel images: set data.image.color: "
                                "grayscale with the mean and std it was trained with (e.g. mean: [0.5], std: [0.5])")
        if h is None or h != w:
            return recipe
        log(f"data: images at {h}x{w} {layout}, the size {Path(recipe.model.path).name} takes (data.image.size)")
        image = dataclasses.replace(image, size=h, layout=layout)
        return recipe.replace(data=dataclasses.replace(recipe.data, image=image))

    def prepare(self, recipe, raw):
        """The source's rows, checked against the graph's input; label names from the output's width when the
        file has none; the model's bytes in the fingerprint (a new file at the same path is a new baseline)."""
        from common.digest import file_digest
        from compress.cache import stage_key

        info = graph_info(recipe.model.path)
        rows = tuple(raw.test.x.shape[1:])
        want = info.input_shape[1:]
        if len(want) != len(rows) or any(w is not None and w != r for w, r in zip(want, rows)):
            raise CompressError(f"data rows are {list(rows)} but {Path(recipe.model.path).name} takes "
                                f"{info.input_name!r} {_shown(info.input_shape)}; save x in the model's input shape")
        width = info.output_shape[1] if info.output_shape else None
        labels = raw.labels
        if width and labels == tuple(f"class {i}" for i in range(len(labels))):  # numbered, not named: the
            labels = tuple(f"class {i}" for i in range(width))  # model's output width is the class count
        if width and labels and len(labels) != width:
            raise CompressError(f"the data names {len(labels)} classes but {Path(recipe.model.path).name} outputs "
                                f"{width} logits per row; save {width} names as `labels` (or none)")
        fingerprint = stage_key(raw.fingerprint, file_digest(Path(recipe.model.path)))
        return dataclasses.replace(raw, labels=labels, fingerprint=fingerprint)

    def describe_data(self, data) -> str:
        labelled = getattr(data, "labelled", data.val.y is not None)
        classes = f"{data.num_classes} classes" if labelled else "unlabelled (scored by agreement with the baseline)"
        return (f"data: {data.name} train {len(data.train.x)} / val {len(data.val.x)} / test {len(data.test.x)} "
                f"rows, input {data.input_shape}, {classes}")

    def load(self, run, path: Path) -> Path:
        return Path(path)  # no torch module: the stages pass the file on

    def chance(self, data) -> float:
        return 1.5 / max(data.num_classes, 1)

    def _val_accuracy(self, run, path: Path) -> float:
        from runtime.measure import predict
        from runtime import load

        val = run.data.val
        with load(path, threads=run.recipe.bench.threads) as runner:
            logits = predict(runner, val.x)
        if logits.ndim != 2:
            raise CompressError(f"{path.name} gives output {list(logits.shape)}, not N x classes logits: {SUPPORTED}")
        if val.y is None:
            return 1.0  # unlabelled rows: the baseline agrees with itself
        if val.y.max() >= logits.shape[1]:
            raise CompressError(f"the data holds class {int(val.y.max())} but the model outputs {logits.shape[1]} "
                                "logits per row")
        return float((logits.argmax(1) == val.y).mean())

    def given_logits(self, run, splits: dict) -> dict:
        """The model as given on unlabelled rows (split name -> logits): its top-1 stands in for labels."""
        from runtime.measure import predict
        from runtime import load

        with load(Path(run.recipe.model.path), threads=run.recipe.bench.threads) as runner:
            return {name: predict(runner, x) for name, x in splits.items()}

    # -- the model as given -----------------------------------------------------------------------
    def train(self, run, out: Path) -> dict[str, Any]:
        """The baseline is the file as given, copied into the run; no training."""
        import shutil

        from common.atomic import atomic_path
        from compress.driver import log

        r = run.recipe
        if r.train.epochs > 0:
            log(f"[train] the ONNX model is taken as given: train.epochs {r.train.epochs:g} ignored (no torch graph "
                "to train)")
        source = Path(r.model.path)
        with atomic_path(out) as tmp:
            shutil.copyfile(source, tmp)
        return {"val_accuracy": self._val_accuracy(run, out), "loss_curve": [],
                "params": graph_info(source).params, "source": str(source), "note": "the ONNX model as given"}

    def shrinks(self, recipe) -> bool:
        return False

    def prune(self, run, raw: Path, pruned: Path) -> dict[str, Any]:
        raise CompressError(NO_TORCH.format(verb="prune"))

    def distill(self, run, source: Path, out: Path) -> dict[str, Any]:
        raise CompressError(NO_TORCH.format(verb="distil"))

    # -- export and INT8 --------------------------------------------------------------------------
    def export(self, run, model, path: Path) -> dict[str, Any]:
        """The export is the file itself: parity exact by construction."""
        import shutil

        from common.atomic import atomic_path

        model = Path(model)
        if model.resolve() != Path(path).resolve():
            with atomic_path(path) as tmp:
                shutil.copyfile(model, tmp)
        return {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "top1_agreement": 1.0, "samples": 0, "ok": True,
                "note": "the ONNX model as given: the exported graph is the input file, byte for byte"}

    def quantize(self, run, source: str, fp32: Path, out: Path, *, tuned: bool) -> dict[str, Any]:
        """Static INT8 (QDQ): the accuracy-aware search for the one that may ship, plain PTQ for comparison."""
        from compress.quantization.post_training import post_training_int8

        return post_training_int8(run, source, fp32, out, tuned=tuned)

    # -- what the targets and the app need --------------------------------------------------------
    def torch_inputs(self, run):
        raise CompressError(f"an ONNX model has no torch module to convert; use --target {onnx_targets()}")


ONNX_MODEL = OnnxModel()
