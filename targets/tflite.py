"""`mobile` target: TFLite / LiteRT, converted from the torch module by litert-torch (offline).

Precisions: ``fp32``; ``fp16`` (weights stored as float16 and dequantized at load, ai-edge-quantizer
FLOAT_CASTING); ``dynamic-int8`` (int8 weights, activations quantized on the fly: PT2E dynamic quantizer);
``int8`` (full integer: PT2E static quantizer from torchao, calibrated on the samples given, per-channel
weights). The .tflite keeps the torch input layout (NCHW: litert-torch inserts the transposes itself) and
a fixed batch (litert-torch 0.10 cannot lower a dynamic batch through `flatten`). A full-integer model
takes int8 inputs and gives int8 outputs; their (scale, zero point) are in the interpreter's details and
in the sidecar, and `runtime`'s `Runner.preprocess` quantizes raw inputs with them.

Unlike the ONNX-based targets, this one compiles from the torch module (`SOURCE = "torch"`): call
`compile_module(model, spec, out_dir, metadata, calib=..., check=...)`. Every artifact is compared with the
torch reference (top-1 agreement, max abs diff) before it is called done, run by runtime's LiteRT runner
(`runtime.tflite_backend.TFLiteRunner`) as an app would run it. The converters live in `targets.tflite_convert`.

Heavy imports (torch, litert_torch, ai_edge_quantizer, ai_edge_litert) happen inside the functions.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.compare import Bars, Comparison, compare
from targets import Artifact, TargetError, TargetSpec
from targets.tflite_convert import INSTALL, _arrays, _check_precision, _missing, _require, _rows, _sample, convert

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

NAME = "mobile"
RUNTIME = "litert"
MODEL_KINDS = frozenset({"image", "text"})
SOURCE = "torch"  # compiles from the torch module, not from the ONNX graph
INPUT_LAYOUT = "NCHW"
# per precision: (max abs diff allowed vs torch, top-1 agreement required vs torch)
DEFAULT_GATES = {"fp32": (1e-4, 0.999), "fp16": (5e-2, 0.99), "dynamic-int8": (None, 0.98), "int8": (None, 0.98)}
OPTIONS = ("precision", "per_channel", "batch", "max_abs_diff", "min_agreement", "check_samples", "calib_samples")


# -- availability --------------------------------------------------------------------------------------------
def available() -> tuple[bool, str]:
    """Cheap: looks for the packages without importing them (litert_torch takes ~10 s to import)."""
    missing = _missing()
    if missing:
        return False, f"{', '.join(missing)} not installed ({INSTALL})"
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = f"litert-torch {version('litert-torch')}, ai-edge-litert {version('ai-edge-litert')}"
    except PackageNotFoundError:  # importable from a source tree without dist-info
        versions = "litert-torch, ai-edge-litert"
    return True, f"{versions} (converts the torch model offline; LiteRT CPU / XNNPACK)"


# -- inspection ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str
    precision: str  # "int8" (integer activations), "hybrid" (float activations, int8 weights), "float"
    activation_dtypes: tuple[str, ...]
    weight_dtypes: tuple[str, ...]


def _litert(open_, path: Path, **kwargs):
    """`open_(path, **kwargs)`, one of runtime.tflite_backend's openers (`TFLiteRunner`, `op_interpreter`); a
    missing interpreter is reported as this target's error, with its install line."""
    from runtime import BackendMissing

    try:
        return open_(Path(path), **kwargs)
    except BackendMissing:
        raise TargetError(f"no TFLite interpreter installed (ai-edge-litert or tflite-runtime); {INSTALL}") from None


def list_ops(path: Path) -> list[OpInfo]:
    """The ops of a .tflite in execution order, each with the precision it computes in.

    Read from an interpreter built without the default XNNPACK delegate, so that the list is the model's
    own ops (a delegate would replace them by one DELEGATE node). Activations are the tensors that are
    graph inputs or outputs of another op; the rest of an op's inputs are weights / constants.
    """
    from runtime.tflite_backend import op_interpreter

    interp = _litert(op_interpreter, path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    produced = {d["index"] for d in interp.get_input_details()}
    for op in ops:
        produced.update(int(i) for i in op["outputs"])
    out = []
    for op in ops:
        ins = [int(i) for i in op["inputs"] if i >= 0]
        acts = [np.dtype(tensors[i]["dtype"]).name for i in ins if i in produced]
        acts += [np.dtype(tensors[int(i)]["dtype"]).name for i in op["outputs"]]
        weights = [np.dtype(tensors[i]["dtype"]).name for i in ins if i not in produced]
        if any(a.startswith("float") for a in acts):
            precision = "hybrid" if any(w in ("int8", "int4") for w in weights) and op["op_name"] != "DEQUANTIZE" else "float"
        else:
            precision = "int8" if any(a in ("int8", "uint8", "int16") for a in acts) else "float"
        out.append(OpInfo(int(op["index"]), op["op_name"], precision, tuple(acts), tuple(weights)))
    return out


def op_summary(path: Path) -> dict[str, Any]:
    """Counts per op type, which ops stayed float (or hybrid), and the input/output signature."""
    from runtime.tflite_backend import op_interpreter

    ops = list_ops(path)
    interp = _litert(op_interpreter, path)

    def io(d: dict) -> dict[str, Any]:
        scale, zero = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "quantization": [float(scale), int(zero)] if scale else None}

    return {
        "ops": dict(Counter(o.op for o in ops)),
        "by_precision": dict(Counter(o.precision for o in ops)),
        "float_ops": dict(Counter(o.op for o in ops if o.precision == "float")),
        "hybrid_ops": dict(Counter(o.op for o in ops if o.precision == "hybrid")),
        "inputs": [io(d) for d in interp.get_input_details()],
        "outputs": [io(d) for d in interp.get_output_details()],
        "input_layout": INPUT_LAYOUT,
    }


# -- parity with torch ---------------------------------------------------------------------------------------
def _to_input(spec, x: np.ndarray) -> np.ndarray:
    """A float input quantized with the artifact's (scale, zero point), or integer ids cast to its dtype; `spec`:
    the runner's `runtime.TensorSpec` of that input."""
    from runtime.runner import quantize_input

    if np.issubdtype(spec.dtype, np.integer) and spec.quantization and np.issubdtype(x.dtype, np.floating):
        x = quantize_input(x, spec.dtype, *spec.quantization)
    return np.ascontiguousarray(x, dtype=spec.dtype)


def run_tflite(path: Path, x, *, threads: int | None = None) -> np.ndarray:
    """Float outputs of the .tflite on inputs `x` (one array N x ..., or a tuple of them, one per input), run by
    runtime's LiteRT runner: quantizes float inputs and dequantizes outputs of an integer model, and runs in
    chunks of the artifact's fixed batch (the last one padded, so any number of rows runs)."""
    from runtime.tflite_backend import TFLiteRunner

    with _litert(TFLiteRunner, path, threads=threads) as runner:
        inputs, (out,) = runner.inputs, runner.outputs
        x = _arrays(x)
        if len(x) != len(inputs):
            raise TargetError(f"{Path(path).name} takes {len(inputs)} inputs; got {len(x)}")
        y = runner.first_output({spec.name: _to_input(spec, np.asarray(a)) for spec, a in zip(inputs, x)})
    if np.issubdtype(out.dtype, np.integer) and out.quantization:
        scale, zero = out.quantization
        y = (y.astype(np.float32) - zero) * scale
    return np.array(y, dtype=np.float32)


def check_parity(model: "nn.Module", path: Path, x: np.ndarray, *, threads: int | None = None,
                 bars: Bars = Bars()) -> Comparison:
    """Compare the .tflite with the torch module on real inputs (`common.compare`: max abs diff, top-1
    agreement, SQNR...), held to `bars`; the caller decides what a miss means. Every row of `x` is used; with
    none there is nothing to compare: the comparison says so (`skipped`), has 0 samples and NaN metrics, and
    does not fail the bars."""
    model = model.eval()
    n = len(_arrays(x)[0])
    if n == 0:
        nan = float("nan")
        return Comparison(nan, nan, nan, nan, samples=0, bars=bars,
                          context=(("skipped", "parity not checked: no input rows to compare on"),))
    import torch

    with torch.no_grad():
        ref = np.concatenate([model(*_sample(_rows(x, i, i + 256))).numpy() for i in range(0, n, 256)])
    got = run_tflite(path, x, threads=threads)
    return compare(ref, got, bars)


def _check_rows(check, calib: tuple[np.ndarray, ...], limit: int) -> tuple[np.ndarray, ...]:
    """Up to `limit` rows of `check`, or of the calibration samples (real inputs too) when `check` is None or
    has no rows."""
    x = () if check is None else _arrays(check)
    if not x or len(x[0]) == 0:
        x = calib
    return _rows(x, 0, limit)


# -- the target --------------------------------------------------------------------------------------------
def _options(spec: TargetSpec) -> dict[str, Any]:
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise TargetError(f"mobile target: unknown option(s) {unknown}; known: {', '.join(OPTIONS)}")
    opts = {"precision": "int8", "per_channel": True, "batch": 1, "check_samples": 1000, "calib_samples": 256,
            **spec.options}
    _check_precision(opts["precision"])
    atol, agreement = DEFAULT_GATES[opts["precision"]]
    opts.setdefault("max_abs_diff", atol)
    opts.setdefault("min_agreement", agreement)
    if not isinstance(opts["batch"], int) or opts["batch"] < 1:
        raise TargetError(f"mobile option batch must be a positive integer, got {opts['batch']!r}")
    return opts


def compile(onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
            check=None) -> Artifact:
    """The ONNX entry point of the other targets; the mobile target converts from torch instead."""
    raise TargetError("target 'mobile' converts from the torch model (litert-torch), not from ONNX: call "
                      "targets.tflite.compile_module(model, spec, out_dir, metadata, calib=..., check=...)")


def compile_module(model: "nn.Module", spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
                   calib: np.ndarray, check: np.ndarray | None = None, name: str = "model") -> Artifact:
    """Convert `model` to `out_dir/<name>.tflite` at spec.options["precision"], check it against torch on up to
    check_samples rows of `check` (the calibration samples when `check` is None or has no rows; with check_samples
    0 the sidecar's parity says it was skipped) and write the sidecar; raises TargetError past the gate.

    `calib` (float32 N x C x H x W, normalised like training; or a tuple of arrays, one per model input, such as
    int64 token ids and attention mask at the fixed sequence length) gives the input shapes and calibrates INT8.
    The model is not modified (PT2E works on an exported copy).
    """
    _require()
    from common.atomic import write_json
    from runtime import sidecar_path

    opts = _options(spec)
    calib = tuple(np.asarray(a) if np.issubdtype(np.asarray(a).dtype, np.integer) else np.asarray(a, np.float32)
                  for a in _arrays(calib))
    if calib[0].ndim < 2 or len(calib[0]) == 0:
        raise TargetError(f"calib must be a non-empty batch of samples, got shape {list(calib[0].shape)}")
    batch = opts["batch"]
    sample = tuple(np.resize(a[:batch], (batch, *a.shape[1:])) for a in calib)
    out_path = Path(out_dir) / f"{name}.tflite"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        convert(model, sample, out_path, opts["precision"], calib=_rows(calib, 0, opts["calib_samples"]),
                per_channel=opts["per_channel"])
    except TargetError:
        raise
    except Exception as e:  # torch.export / litert-torch / ai-edge-quantizer: unsupported ops and the like
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise TargetError(f"{opts['precision']} conversion with litert-torch failed: {type(e).__name__}: {first}") from None
    x = _check_rows(check, calib, opts["check_samples"])
    parity = check_parity(model, out_path, x, threads=spec.threads,
                          bars=Bars(atol=opts["max_abs_diff"], min_agreement=opts["min_agreement"]))
    if not parity.ok:
        out_path.unlink(missing_ok=True)
        raise TargetError(
            f"{opts['precision']} .tflite differs from torch: top-1 agreement {parity.top1_agreement:.4f} "
            f"(need >= {opts['min_agreement']}), max abs diff {parity.max_abs_diff:.2e}"
            + (f" (need <= {opts['max_abs_diff']:.0e})" if opts["max_abs_diff"] is not None else "")
            + f" on {parity.samples} samples; not shipped")
    summary = op_summary(out_path)
    pre = metadata.get("preprocess")
    preprocess = {**pre, "layout": INPUT_LAYOUT} if pre and pre.get("kind") != "text" else None
    meta = {**metadata, "target": spec.name, "runtime": RUNTIME, "threads": spec.threads,
            "precision": opts["precision"], "per_channel": opts["per_channel"], "batch": opts["batch"],
            "ops": summary, "parity_vs_torch": parity.to_dict()}
    if preprocess is not None:
        meta["preprocess"] = preprocess
    write_json(sidecar_path(out_path), meta)
    return Artifact(out_path, spec.name, RUNTIME, meta)
