"""Accuracy of an artifact through `runtime/`, the same path an edge app uses."""
from __future__ import annotations

import numpy as np

TEXT_INPUTS = ("input_ids", "attention_mask")


def fixed_batch(runner) -> int | None:
    """The batch size the artifact is fixed to (a .tflite from litert-torch), or None when it is dynamic."""
    return runner.inputs[0].shape[0] if runner.inputs and runner.inputs[0].shape else None


def as_model_input(spec, x: np.ndarray) -> np.ndarray:
    """Float inputs, normalised as in training, in the dtype the model takes: a full-integer model's input is
    quantized with its own (scale, zero point), exactly as `Runner.preprocess` does for an app."""
    if spec.quantization is None or not np.issubdtype(spec.dtype, np.integer):
        return x
    scale, zero = spec.quantization
    info = np.iinfo(spec.dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(spec.dtype)


def as_float_output(spec, y: np.ndarray) -> np.ndarray:
    if spec.quantization is None or not np.issubdtype(y.dtype, np.integer):
        return y
    scale, zero = spec.quantization
    return (y.astype(np.float32) - zero) * scale


def predict(runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (float) for every row of `x`, in batches; a fixed-batch artifact gets its own batch size, the
    last one padded by repeating rows (their outputs dropped)."""
    fixed = fixed_batch(runner)
    size = fixed or batch_size
    outs = []
    for i in range(0, len(x), size):
        chunk = x[i : i + size]
        n = len(chunk)
        if fixed and n < fixed:
            chunk = np.resize(chunk, (fixed, *chunk.shape[1:]))
        y = next(iter(runner.infer(as_model_input(runner.inputs[0], chunk)).values()))
        outs.append(as_float_output(runner.outputs[0], y)[:n])
    return np.concatenate(outs)


def is_text(split) -> bool:
    return hasattr(split, "input_ids")


def predict_split(runner, split, batch_size: int = 256) -> np.ndarray:
    """Logits for every row of an image split (`x`) or a tokenized text split (`input_ids`, `attention_mask`;
    batches of similar length, each padded only to its longest row), in the split's order."""
    if not is_text(split):
        return predict(runner, split.x, batch_size)
    from bench.text_data import logits_by_length

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return next(iter(runner.infer(dict(zip(TEXT_INPUTS, (ids, mask)))).values()))

    return logits_by_length(split, min(batch_size, 32), run)


def latency_feeds(split, batch: int, input_name: str, seq_length: int | None = None) -> dict[str, np.ndarray]:
    """A batch of real rows for timing: images repeated to `batch`; text rows cut or padded to `seq_length`."""
    if not is_text(split):
        return {input_name: np.ascontiguousarray(np.resize(split.x, (batch, *split.x.shape[1:])))}
    from bench.text_data import at_length

    rows = split.take(np.resize(np.arange(len(split)), batch), crop=False)
    rows = at_length(rows, seq_length or split.input_ids.shape[1])
    return dict(zip(TEXT_INPUTS, (rows.input_ids, rows.attention_mask)))


def accuracy(runner, split, batch_size: int = 256) -> tuple[float, np.ndarray]:
    logits = predict_split(runner, split, batch_size)
    return float((logits.argmax(1) == split.y).mean()), logits


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())
