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
torch reference (top-1 agreement, max abs diff) before it is called done.

Heavy imports (torch, litert_torch, ai_edge_quantizer, ai_edge_litert) happen inside the functions.
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.compare import Bars, Comparison, compare
from targets import Artifact, TargetError, TargetSpec

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

NAME = "mobile"
RUNTIME = "litert"
MODEL_KINDS = frozenset({"image", "text"})
SOURCE = "torch"  # compiles from the torch module, not from the ONNX graph
PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
INPUT_LAYOUT = "NCHW"
# per precision: (max abs diff allowed vs torch, top-1 agreement required vs torch)
DEFAULT_GATES = {"fp32": (1e-4, 0.999), "fp16": (5e-2, 0.99), "dynamic-int8": (None, 0.98), "int8": (None, 0.98)}
OPTIONS = ("precision", "per_channel", "batch", "max_abs_diff", "min_agreement", "check_samples", "calib_samples")
INSTALL = "pip install 'edge-compress[tflite]' (litert-torch==0.10.0, ai-edge-litert==2.3.0)"


# -- availability --------------------------------------------------------------------------------------------
def _missing() -> list[str]:
    mods = {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert", "torchao": "torchao",
            "ai_edge_quantizer": "ai-edge-quantizer"}
    out = []
    for mod, dist in mods.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(dist)
    return out


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


def _require() -> None:
    missing = _missing()
    if missing:
        raise TargetError(f"target 'mobile' needs {', '.join(missing)}; {INSTALL}")
    with _quiet():  # the first import prints torchao's missing CUDA kernels and torch deprecation warnings
        import litert_torch  # noqa: F401
        import torchao.quantization.pt2e  # noqa: F401


# -- conversion ----------------------------------------------------------------------------------------------
Inputs = "np.ndarray | tuple[np.ndarray, ...]"  # one array per model input, batch first


def _arrays(x) -> tuple[np.ndarray, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _rows(x, start: int, stop: int) -> tuple[np.ndarray, ...]:
    return tuple(a[start:stop] for a in _arrays(x))


def _sample(sample) -> tuple:
    """Torch tensors for the model's positional inputs: float arrays as float32, integer ones (token ids, masks)
    as int64."""
    import torch

    out = []
    for a in _arrays(sample):
        a = np.asarray(a)
        if a.ndim < 2:
            raise TargetError(f"sample input must have a batch axis, got shape {list(a.shape)}")
        dtype = np.int64 if np.issubdtype(a.dtype, np.integer) else np.float32
        out.append(torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)))
    return tuple(out)


def _export(edge_model, path: Path) -> Path:
    from common.atomic import atomic_path

    with atomic_path(path) as tmp, _quiet():
        edge_model.export(str(tmp))
    return Path(path)


def convert_fp32(model: "nn.Module", sample: np.ndarray, path: Path) -> Path:
    """Float32 .tflite of `model` traced at `sample`'s shape (its batch is fixed in the artifact)."""
    _require()
    import litert_torch

    with _quiet():
        edge = litert_torch.convert(model.eval(), _sample(sample))
    return _export(edge, path)


def _requantize(model: "nn.Module", sample, path: Path, configure) -> Path:
    """FP32 .tflite, then ai-edge-quantizer on it with the recipe `configure(quantizer)` adds."""
    _require()
    import tempfile

    from ai_edge_quantizer import quantizer

    from common.atomic import atomic_path

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=".aeq-", dir=path.parent if path.parent.exists() else None) as tmp:
        fp32 = convert_fp32(model, sample, Path(tmp) / "fp32.tflite")
        q = quantizer.Quantizer(str(fp32))
        configure(q)
        with _quiet():
            result = q.quantize()
        with atomic_path(path) as out:
            out.write_bytes(bytes(result.quantized_model))
    return path


def convert_fp16(model: "nn.Module", sample: np.ndarray, path: Path) -> Path:
    """Float16 weights (half the bytes), dequantized to float32 at load: TFLite's "float16 quantization"."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    def configure(q) -> None:
        q.update_quantization_recipe(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True),
            algorithm_key=AlgorithmName.FLOAT_CASTING)

    return _requantize(model, sample, path, configure)


def convert_dynamic_int8_matmuls(model: "nn.Module", sample, path: Path) -> Path:
    """Dynamic-range INT8 of the FULLY_CONNECTED weights only (per channel), for models with a token embedding:
    the PT2E route also quantizes the embedding table, with a zero point LiteRT's embedding_lookup rejects
    (`zero_point == 0` check at load). The table stays float32."""
    from ai_edge_quantizer import qtyping

    def configure(q) -> None:
        q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED, num_bits=8)

    return _requantize(model, sample, path, configure)


def _pt2e(model: "nn.Module", sample: np.ndarray, *, dynamic: bool, per_channel: bool,
          calib: np.ndarray | None, calib_batch: int = 32):
    """Export, annotate with litert-torch's PT2E quantizer, calibrate, convert: a quantized fx module."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic))
    data = _sample(sample if calib is None else calib)
    n = len(data[0])
    # a batch-2 example with a symbolic batch so that calibration can run in batches (batch 1 would fix it)
    example = tuple(t[:2] if n >= 2 else torch.cat([t, t]) for t in data)
    batch = torch.export.Dim("batch", min=1, max=max(4096, n))
    with _quiet():
        graph = torch.export.export(model.eval(), example, dynamic_shapes=tuple({0: batch} for _ in data)).module()
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for i in range(0, n, calib_batch):
                prepared(*(t[i : i + calib_batch] for t in data))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        move_exported_model_to_eval(converted)  # an exported module ignores .eval(); litert-torch warns otherwise
    return converted, quantizer


def convert_dynamic_int8(model: "nn.Module", sample: np.ndarray, path: Path, *, per_channel: bool = True) -> Path:
    """Dynamic-range INT8: int8 weights; float activations quantized on the fly inside the kernels. A model that
    takes integer inputs (token ids into an embedding) goes through `convert_dynamic_int8_matmuls`."""
    if any(np.issubdtype(np.asarray(a).dtype, np.integer) for a in _arrays(sample)):
        return convert_dynamic_int8_matmuls(model, sample, path)
    _require()
    import litert_torch
    from litert_torch.quantize import quant_config

    qmodel, quantizer = _pt2e(model, sample, dynamic=True, per_channel=per_channel, calib=None)
    with _quiet():
        edge = litert_torch.convert(qmodel, _sample(sample),
                                    quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return _export(edge, path)


def convert_int8(model: "nn.Module", sample: np.ndarray, calib: np.ndarray, path: Path, *,
                 per_channel: bool = True) -> Path:
    """Full-integer INT8 through the PT2E static quantizer, calibrated on `calib` (N x ... float32)."""
    _require()
    if len(_arrays(calib)[0]) == 0:
        raise TargetError("full-integer INT8 needs calibration samples; got none")
    if not all(np.isfinite(a).all() for a in _arrays(calib) if np.issubdtype(np.asarray(a).dtype, np.floating)):
        raise TargetError("calibration samples contain NaN or inf; clean the data before quantizing")
    import litert_torch
    from litert_torch.quantize import quant_config

    qmodel, quantizer = _pt2e(model, sample, dynamic=False, per_channel=per_channel, calib=calib)
    with _quiet():
        edge = litert_torch.convert(qmodel, _sample(sample),
                                    quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return _export(edge, path)


def convert(model: "nn.Module", sample: np.ndarray, path: Path, precision: str = "int8", *,
            calib: np.ndarray | None = None, per_channel: bool = True) -> Path:
    """One entry for the four precisions; `calib` is needed for "int8" only."""
    _check_precision(precision)
    if precision == "fp32":
        return convert_fp32(model, sample, path)
    if precision == "fp16":
        return convert_fp16(model, sample, path)
    if precision == "dynamic-int8":
        return convert_dynamic_int8(model, sample, path, per_channel=per_channel)
    if calib is None:
        raise TargetError("precision 'int8' (full integer) needs calibration samples: pass calib=")
    return convert_int8(model, sample, calib, path, per_channel=per_channel)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise TargetError(f"mobile precision {precision!r} unknown; known: {', '.join(PRECISIONS)}")


# -- inspection ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str
    precision: str  # "int8" (integer activations), "hybrid" (float activations, int8 weights), "float"
    activation_dtypes: tuple[str, ...]
    weight_dtypes: tuple[str, ...]


def _interpreter(path: Path, threads: int | None = None, *, delegates: bool = True):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # a device with the old runtime only
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise TargetError(f"no TFLite interpreter installed (ai-edge-litert or tflite-runtime); {INSTALL}") from None
    kwargs = {} if delegates else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interp = Interpreter(model_path=str(path), num_threads=threads, **kwargs)
    interp.allocate_tensors()
    return interp


def list_ops(path: Path) -> list[OpInfo]:
    """The ops of a .tflite in execution order, each with the precision it computes in.

    Read from an interpreter built without the default XNNPACK delegate, so that the list is the model's
    own ops (a delegate would replace them by one DELEGATE node). Activations are the tensors that are
    graph inputs or outputs of another op; the rest of an op's inputs are weights / constants.
    """
    interp = _interpreter(Path(path), delegates=False)
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
    ops = list_ops(path)
    interp = _interpreter(Path(path), delegates=False)

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
def _to_input(detail: dict, x: np.ndarray) -> np.ndarray:
    """A float input quantized with the artifact's (scale, zero point), or integer ids cast to its dtype."""
    from runtime.runner import quantize_input

    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(detail["dtype"], np.integer) and scale and np.issubdtype(x.dtype, np.floating):
        x = quantize_input(x, detail["dtype"], scale, zero)
    return np.ascontiguousarray(x, dtype=detail["dtype"])


def run_tflite(path: Path, x, *, threads: int | None = None) -> np.ndarray:
    """Float outputs of the .tflite on inputs `x` (one array N x ..., or a tuple of them, one per input):
    quantizes float inputs and dequantizes outputs of an integer model, and runs in chunks of the artifact's
    fixed batch."""
    interp = _interpreter(Path(path), threads)
    inputs, (out,) = interp.get_input_details(), interp.get_output_details()
    x = _arrays(x)
    if len(x) != len(inputs):
        raise TargetError(f"{Path(path).name} takes {len(inputs)} inputs; got {len(x)}")
    batch = int(inputs[0]["shape"][0])
    n = len(x[0])
    if n % batch:
        raise TargetError(f"{Path(path).name} has a fixed batch of {batch}; got {n} samples")
    results = []
    for i in range(0, n, batch):
        for detail, a in zip(inputs, x):
            interp.set_tensor(detail["index"], _to_input(detail, np.asarray(a[i : i + batch])))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(np.array(y, dtype=np.float32))
    return np.concatenate(results)


def check_parity(model: "nn.Module", path: Path, x: np.ndarray, *, threads: int | None = None,
                 bars: Bars = Bars()) -> Comparison:
    """Compare the .tflite with the torch module on real inputs (`common.compare`: max abs diff, top-1
    agreement, SQNR...), held to `bars`; the caller decides what a miss means."""
    import torch

    model = model.eval()
    n = len(_arrays(x)[0])
    with torch.no_grad():
        ref = np.concatenate([model(*_sample(_rows(x, i, i + 256))).numpy() for i in range(0, n, 256)])
    got = run_tflite(path, x, threads=threads)
    return compare(ref, got, bars)


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
    """Convert `model` to `out_dir/<name>.tflite` at spec.options["precision"], check it against torch on
    `check` (default: the calibration samples) and write the sidecar; raises TargetError past the gate.

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
    x = calib if check is None else _arrays(check)
    n = min(len(x[0]), opts["check_samples"])
    x = _rows(x, 0, n - n % batch)
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


class _quiet:
    """litert-torch prints progress lines (some from C++, straight to file descriptors 1 and 2) and torch export
    warnings that are noise to our users. Captured at the descriptor level and dropped; when a conversion fails,
    EDGE_COMPRESS_CONVERTER_LOG=1 prints its last 4 KB before the one-line error."""

    def __enter__(self):
        import contextlib
        import logging
        import os
        import tempfile
        import warnings

        self._stack = contextlib.ExitStack()
        logging.getLogger("torch").setLevel(logging.ERROR)
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        _flush_all()
        self._log = self._stack.enter_context(tempfile.TemporaryFile(mode="w+b"))
        self._saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(self._log.fileno(), fd)
        except OSError:
            self._restore()
            self._stack.close()
            raise
        return self

    def _restore(self) -> None:
        import os

        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)

    def __exit__(self, exc_type, *rest):
        import os
        import sys

        _flush_all()
        self._restore()
        if exc_type is not None and os.environ.get("EDGE_COMPRESS_CONVERTER_LOG"):  # the converter's own output
            self._log.seek(0)
            print(self._log.read()[-4000:].decode(errors="replace"), file=sys.stderr)
        return self._stack.__exit__(exc_type, *rest)


def _flush_all() -> None:
    """Python's and C's stdio buffers, so that nothing written before a descriptor swap lands on the other side."""
    import ctypes
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library handle (not Linux / macOS): Python's buffers are flushed
        pass

