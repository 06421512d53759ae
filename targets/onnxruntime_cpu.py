"""`cpu` target: ONNX Runtime on CPU. The artifact is the ONNX graph plus a metadata sidecar.

The copied graph is opened with `runtime.load` and, when check inputs are given, run on them and compared with
ONNX Runtime on the source file: a graph that opens but gives other outputs never ships.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from targets import Artifact, TargetError, TargetSpec

NAME = "cpu"
RUNTIME = "onnxruntime"
SOURCE = "onnx"
MODEL_KINDS = frozenset({"image", "text"})
SIBLING = "mobile"  # LiteRT's files run on the same CPU: built and timed beside ours (compress.stages.litert)
CHECK_SAMPLES = 32  # rows of `check` run through both graphs: cheap, and enough to catch a wrong graph
CHECK_ATOL = 1e-5  # the same bytes on the same runtime: only thread scheduling may move the last bits


def available() -> tuple[bool, str]:
    try:
        import onnxruntime
    except ImportError:
        return False, "onnxruntime is not installed (a core dependency: pip install -e . in the checkout)"
    return True, f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"


def compile(onnx_path: Path, spec: TargetSpec, out_dir: Path, metadata: dict[str, Any], *,
            check=None) -> Artifact:
    """Copy the graph under the target's name, check it on `check` against the source (when given) and store
    preprocessing/provenance beside it."""
    from common.atomic import atomic_path, write_json
    from runtime import load, sidecar_path

    out_path = Path(out_dir) / "model.onnx"
    parity = None
    with atomic_path(out_path) as tmp:
        shutil.copyfile(onnx_path, tmp)
        with load(tmp, threads=spec.threads) as runner:  # a graph that ONNX Runtime cannot open never ships
            if check is not None:
                from targets import check_feeds

                feeds = check_feeds(check, runner.inputs, CHECK_SAMPLES)
                got = runner.infer(feeds)
        if check is not None:
            with load(onnx_path, threads=spec.threads) as ref:
                expected = ref.infer(feeds)
            parity = _compare(expected, got)
            missed = {name: c for name, c in parity.items() if not c.ok}
            if missed:  # raising inside atomic_path: the copy never appears under its final name
                name, c = next(iter(missed.items()))
                raise TargetError(f"{out_path.name} differs from ONNX Runtime on {Path(onnx_path).name}: output "
                                  f"{name!r}: {c.why} on {c.samples} samples; not shipped")
    meta = {**metadata, "target": spec.name, "runtime": RUNTIME, "threads": spec.threads}
    if parity is not None:
        meta["parity_vs_source"] = {name: c.to_dict() for name, c in parity.items()}
    write_json(sidecar_path(out_path), meta)
    return Artifact(out_path, spec.name, RUNTIME, meta)


def _compare(expected: dict, got: dict) -> dict:
    """Per output: `common.compare.compare` of the copy's outputs against the source's, rows kept, the rest
    flattened (so any output rank compares)."""
    import numpy as np

    from common.compare import Bars, compare

    out = {}
    for name, ref in expected.items():
        ref, test = np.asarray(ref), np.asarray(got[name])
        if ref.ndim > 2:
            ref, test = ref.reshape(len(ref), -1), test.reshape(len(test), -1)
        out[name] = compare(ref, test, Bars(atol=CHECK_ATOL))
    return out
