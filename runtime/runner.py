"""The backend-independent part of a runner: metadata, input validation, pre/post-processing."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.errors import ArtifactError, BackendMissing, InputError, RuntimeFailure
from runtime.images import ImageSpec, as_list, is_raw_batch, load_images


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None marks a dynamic dimension
    dtype: np.dtype
    dim_names: tuple[str | None, ...] = ()  # the symbolic name of each dynamic dimension, where the model has one
    quantization: tuple[float, int] | None = None  # (scale, zero point) of a quantized input or output

    def describe(self) -> str:
        names = self.dim_names or (None,) * len(self.shape)
        dims = ", ".join(str(d) if d is not None else (n or "?") for d, n in zip(self.shape, names))
        return f"{self.name}: {self.dtype.name}[{dims}]"

    @property
    def is_dynamic(self) -> bool:
        return any(d is None for d in self.shape)


class Runner:
    """Subclasses fill `inputs` / `outputs` and implement `_run(feeds) -> list of arrays` (thread-safe)."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    backend: str = ""
    providers: list[str] | tuple[str, ...] = ()  # ONNX Runtime: the execution providers the session really uses

    def __init__(self, path: Path, metadata: Mapping[str, Any] | None) -> None:
        self.path = Path(path)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._checks: tuple | None = None
        self.closed = False

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        ins = "; ".join(s.describe() for s in self.inputs)
        outs = "; ".join(s.describe() for s in self.outputs)
        where = f"{self.backend} on {self.providers[0]}" if self.providers else self.backend
        return f"<{type(self).__name__} {self.path.name} [{where}] inputs {ins} -> {outs}>"

    # -- validation ------------------------------------------------------------------------------------------
    def _compile_checks(self) -> tuple:
        """Per input: (name, dtype, rank, fixed dims as (axis, size) pairs, spec); computed once."""
        checks = tuple(
            (s.name, s.dtype, len(s.shape), tuple((i, d) for i, d in enumerate(s.shape) if d is not None), s)
            for s in self.inputs
        )
        self._checks = checks
        return checks

    def validate(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Checks names, dtypes and shapes against the model; returns the feeds as a dict of C-contiguous arrays.

        Raises InputError saying what was expected. Nothing is converted: a float64 array for a float32
        input is an error, not a silent copy.
        """
        checks = self._checks or self._compile_checks()
        if isinstance(feeds, np.ndarray):
            if len(checks) != 1:
                raise InputError(f"model has {len(checks)} inputs ({self._expected()}); pass a dict of arrays")
            feeds = {checks[0][0]: feeds}
        elif not isinstance(feeds, Mapping):
            raise InputError(f"inputs must be a numpy array or a dict of them, got {type(feeds).__name__}; "
                             f"expected {self._expected()}")
        if len(feeds) != len(checks):
            self._raise_names(feeds)
        checked = {}
        for name, dtype, rank, fixed, spec in checks:
            try:
                value = feeds[name]
            except KeyError:
                self._raise_names(feeds)
            if type(value) is not np.ndarray and not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array, got {type(value).__name__}; "
                                 f"expected {spec.describe()}")
            if value.dtype != dtype:
                raise InputError(f"input {name!r} has dtype {value.dtype.name}; expected {spec.describe()}")
            shape = value.shape
            if len(shape) != rank:
                raise InputError(f"input {name!r} has rank {len(shape)} (shape {list(shape)}); "
                                 f"expected {spec.describe()}")
            for axis, size in fixed:
                if shape[axis] != size:
                    raise InputError(f"input {name!r} has shape {list(shape)}; expected {spec.describe()} "
                                     f"(axis {axis} must be {size})")
            if value.size == 0:
                raise InputError(f"input {name!r} is empty (shape {list(shape)}); expected {spec.describe()}")
            checked[name] = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        return checked

    def _expected(self) -> str:
        return "; ".join(s.describe() for s in self.inputs)

    def _raise_names(self, feeds: Mapping) -> None:
        expected = {s.name for s in self.inputs}
        unknown = sorted(str(k) for k in feeds if k not in expected)
        missing = sorted(n for n in expected if n not in feeds)
        parts = ([f"unknown {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else [])
        raise InputError(f"input names do not match the model ({', '.join(parts)}); expected {self._expected()}")

    # -- inference -------------------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a dict of arrays (or one array for a one-input model); returns {output name: array}.

        Inputs are validated first (InputError). Safe to call from several threads at once.
        """
        outs = self._run(self.validate(feeds))
        return {spec.name: out for spec, out in zip(self.outputs, outs)}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_raw(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """No validation: for benchmarks that time the backend itself."""
        return self._run(feeds)

    def _closed_error(self) -> RuntimeFailure:
        return RuntimeFailure(f"runner for {self.path.name} is closed; load the artifact again")

    # -- pre/post-processing stored with the artifact by the pipeline --------------------------
    def preprocess(self, raw) -> np.ndarray:
        """Raw inputs (image files, or uint8 images N x H x W [x C]) -> the model's input, using the sidecar's
        "preprocess"."""
        spec = self.inputs[0]
        pre = self.metadata.get("preprocess")
        image_spec = ImageSpec.from_sidecar(pre) if pre else None
        if image_spec is not None:
            return self._images(raw, image_spec, spec)
        raw = np.asarray(raw)
        if not pre:
            x = raw.astype(np.float32) if spec.quantization else raw
        else:
            x = raw.astype(np.float32) * float(pre.get("scale", 1.0))
            if x.ndim == len(spec.shape) - 1:
                x = x[:, None] if pre.get("layout", "NCHW") == "NCHW" else x[..., None]
            x = (x - float(pre.get("mean", 0.0))) / float(pre.get("std", 1.0))
        if spec.quantization and np.issubdtype(spec.dtype, np.integer):
            x = quantize_input(x, spec.dtype, *spec.quantization)
        return np.ascontiguousarray(x, dtype=spec.dtype)

    def _images(self, raw, image_spec, spec: TensorSpec) -> np.ndarray:
        """Image files, Pillow images or uint8 pixels (N x H x W [x C]) -> the model's input, as the sidecar says."""
        if is_raw_batch(raw):
            x = load_images(as_list(raw), image_spec)
        else:
            raw = np.asarray(raw)
            if raw.ndim == 3 and raw.shape[-1] in (3, 4) and image_spec.color != "grayscale":
                raw = raw[None]  # one colour picture (H x W x C), e.g. np.asarray(Image.open(...))
            if raw.dtype != np.uint8 or raw.ndim not in (3, 4):
                raise InputError(f"raw images must be file paths or uint8 N x H x W [x C] pixels, got {raw.dtype} "
                                 f"{list(raw.shape)}")
            x = load_images(list(raw), image_spec)
        if spec.quantization and np.issubdtype(spec.dtype, np.integer):
            x = quantize_input(x, spec.dtype, *spec.quantization)
        return np.ascontiguousarray(x, dtype=spec.dtype)

    def predict(self, raw) -> list[str]:
        """Raw inputs (image files, or uint8 images N x H x W [x C]) -> label names, using the stored
        preprocessing."""
        return self._labels(self.first_output({self.inputs[0].name: self.preprocess(raw)}))

    def first_output(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output for N rows of validated feeds, also on an artifact fixed to another batch (a .tflite):
        run in chunks of that batch, the last chunk padded by repeating its rows."""
        fixed = self.inputs[0].shape[0] if self.inputs[0].shape else None
        n = len(next(iter(feeds.values())))
        if fixed is None or n in (0, fixed):  # nothing to split; an empty batch gets infer's own error
            return next(iter(self.infer(feeds).values()))
        outs = []
        for i in range(0, n, fixed):
            chunk = {k: v[i : i + fixed] for k, v in feeds.items()}
            rows = len(next(iter(chunk.values())))
            if rows < fixed:
                chunk = {k: np.resize(v, (fixed, *v.shape[1:])) for k, v in chunk.items()}
            outs.append(next(iter(self.infer(chunk).values()))[:rows])
        return np.concatenate(outs)

    def _labels(self, logits: np.ndarray) -> list[str]:
        labels = self.metadata.get("labels") or [str(i) for i in range(logits.shape[-1])]
        return [labels[i] for i in logits.reshape(len(logits), -1).argmax(-1)]

    def encode_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Texts -> the model's int64 `input_ids` / `attention_mask`, with the tokenizer stored beside the artifact
        (its own `tokenizer.json`, truncation to the trained length included). Needs the `tokenizers` package."""
        pre = self.metadata.get("preprocess") or {}
        if pre.get("kind") != "text":
            raise InputError(f"{self.path.name} does not take text (its metadata has no text preprocessing)")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
            raise InputError("texts must be a non-empty list of strings")
        if len(self.inputs) < 2:
            raise InputError(f"{self.path.name} has {len(self.inputs)} input(s); a text model takes input_ids and "
                             "attention_mask")
        tokenizer = self._tokenizer(pre)
        encodings = tokenizer.encode_batch(list(texts))
        ids_spec, mask_spec = self.inputs[0], self.inputs[1]
        fixed = ids_spec.shape[1] if len(ids_spec.shape) > 1 else None  # a .tflite has one sequence length
        width = fixed or max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), ids_spec.dtype)
        mask = np.zeros((len(encodings), width), mask_spec.dtype)
        for i, e in enumerate(encodings):
            n = min(len(e.ids), width)
            ids[i, :n] = e.ids[:n]
            mask[i, :n] = 1
        return {ids_spec.name: ids, mask_spec.name: mask}

    def predict_texts(self, texts: Sequence[str]) -> list[str]:
        """Texts -> label names (a text classifier compiled by the pipeline)."""
        return self._labels(self.first_output(self.encode_texts(texts)))

    def _tokenizer(self, pre: Mapping[str, Any]):
        if getattr(self, "_text_tokenizer", None) is None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise BackendMissing("text models need the tokenizers package (pip install './runtime[text]', the edge-compress-runtime distribution)"
                                     ) from None
            path = self.path.parent / str(pre.get("tokenizer", "tokenizer.json"))
            try:
                self._text_tokenizer = Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception on missing or bad files
                raise ArtifactError(f"tokenizer {path} is missing or unreadable: {str(e).splitlines()[0][:200]}"
                                    ) from None
            self._text_tokenizer.no_padding()
        return self._text_tokenizer


def quantize_input(x: np.ndarray, dtype, scale: float, zero: int) -> np.ndarray:
    """Float values -> the integer input of a quantized artifact: round(x / scale) + zero, clipped to `dtype`."""
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def read_metadata(path: Path) -> dict[str, Any]:

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"metadata {path} is unreadable or not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"metadata {path} must hold a JSON object")
    return data
