"""Conversion for the `mobile` target (`targets.tflite`): the torch module to a .tflite with litert-torch, at the
target's four precisions, and the descriptor-level silencing of the converters' output.

``fp32``; ``fp16`` (weights stored as float16 and dequantized at load, ai-edge-quantizer FLOAT_CASTING);
``dynamic-int8`` (int8 weights, activations quantized on the fly: PT2E dynamic quantizer); ``int8`` (full integer:
PT2E static quantizer from torchao, calibrated on the samples given, per-channel weights). Every public name here is
also importable from `targets.tflite`.

Heavy imports (torch, litert_torch, ai_edge_quantizer, torchao) happen inside the functions.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from targets import TargetError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
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


def _require() -> None:
    missing = _missing()
    if missing:
        raise TargetError(f"target 'mobile' needs {', '.join(missing)}; {INSTALL}")
    with _quiet():  # the first import prints torchao's missing CUDA kernels and torch deprecation warnings
        import litert_torch  # noqa: F401
        import torchao.quantization.pt2e  # noqa: F401


# -- conversion ----------------------------------------------------------------------------------------------
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


# -- the converters' output ----------------------------------------------------------------------------------
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
