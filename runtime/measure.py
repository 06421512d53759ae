"""What a bench measures where the artifact runs: logits on given rows and interleaved latency blocks.

Torch-free (numpy and the runtime's backends), so the same code times a file on this machine (bench.report) and
on an edge device over SSH (runtime.device_bench), and the figures of both are computed alike.
"""
from __future__ import annotations

import gc
import sys
import time
from typing import Callable, ContextManager, Mapping

import numpy as np

RunFn = Callable[[], object]
OpenFn = Callable[[], ContextManager[RunFn]]


def fixed_batch(runner) -> int | None:
    """The batch size the artifact is fixed to (a .tflite from litert-torch), or None when it is dynamic."""
    return runner.inputs[0].shape[0] if runner.inputs and runner.inputs[0].shape else None


def as_model_input(spec, x: np.ndarray) -> np.ndarray:
    """`x` in the dtype the model takes: float inputs (normalised as in training) of a full-integer model are
    quantized with its own (scale, zero point), exactly as `Runner.preprocess` does for an app; integer inputs
    (token ids) are cast to the artifact's integer type (int32 in a .tflite, int64 in an ONNX)."""
    if x.dtype == spec.dtype:
        return x
    if spec.quantization is not None and np.issubdtype(spec.dtype, np.integer) and np.issubdtype(x.dtype, np.floating):
        from runtime.runner import quantize_input

        return quantize_input(x, spec.dtype, *spec.quantization)
    if np.issubdtype(x.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer):
        return x.astype(spec.dtype)
    return x


def as_float_output(spec, y: np.ndarray) -> np.ndarray:
    if spec.quantization is None or not np.issubdtype(y.dtype, np.integer):
        return y
    scale, zero = spec.quantization
    return (y.astype(np.float32) - zero) * scale


def model_feeds(runner, arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """One array per model input, in the runner's input order, converted with `as_model_input`."""
    return {spec.name: as_model_input(spec, a) for spec, a in zip(runner.inputs, arrays)}


def predict_arrays(runner, arrays: tuple[np.ndarray, ...], batch_size: int = 256) -> np.ndarray:
    """Float logits for every row of `arrays` (one per model input), in batches; a fixed-batch artifact gets its
    own batch size (`Runner.first_output` pads the last one)."""
    size = fixed_batch(runner) or batch_size
    outs = []
    for i in range(0, len(arrays[0]), size):
        feeds = model_feeds(runner, tuple(a[i : i + size] for a in arrays))
        outs.append(as_float_output(runner.outputs[0], runner.first_output(feeds)))
    return np.concatenate(outs)


def predict(runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float logits of a one-input model (images) for every row of `x`."""
    return predict_arrays(runner, (x,), batch_size)


def image_feeds(specs, x: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """A batch of real rows for timing a one-input model: the rows repeated to `batch`, in the model's dtype."""
    rows = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    return {specs[0].name: as_model_input(specs[0], rows)}


def timed_batches(wanted: tuple[int, ...], fixed: set[int | None]) -> tuple[int, ...]:
    """The batch sizes every variant can run: all of `wanted` when batches are dynamic; the one fixed batch
    (a .tflite is converted at one batch size) when an artifact has one."""
    sizes = {b for b in fixed if b is not None}
    if len(sizes) > 1:
        raise ValueError(f"variants are fixed to different batch sizes {sorted(sizes)}; bench them apart")
    if not sizes:
        return tuple(wanted)
    (only,) = sizes
    if tuple(wanted) != (only,):
        print(f"  latency at batch {only} only: the artifacts are fixed to that batch", file=sys.stderr)
    return (only,)


def time_block(run: RunFn, warmup: int, runs: int) -> np.ndarray:
    for _ in range(warmup):
        run()
    out = np.empty(runs)
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        run()
        out[i] = clock() - start
    return out / 1e6


def interleaved_blocks(open_by_variant: Mapping[str, OpenFn], *, warmup: int, runs: int, rounds: int,
                       on_block: Callable[[], None] | None = None) -> dict[str, list[np.ndarray]]:
    """Per variant, `rounds` blocks of per-call times (ms), the variants' blocks cycled round by round.

    Each block opens its own session and closes it afterwards: idle ONNX Runtime sessions keep their
    intra-op threads spinning, and on a 2-core box that slowed whichever session ran next by up to 50 %."""
    samples: dict[str, list[np.ndarray]] = {name: [] for name in open_by_variant}
    per_block = max(1, runs // rounds)
    for _ in range(rounds):
        for name, open_run in open_by_variant.items():
            with open_run() as run:
                samples[name].append(time_block(run, warmup, per_block))
            gc.collect()
            if on_block:
                on_block()
    return samples
