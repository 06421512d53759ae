"""ONNX Runtime's CPU SkipLayerNormalization against the Add + LayerNormalization it replaces.

    python -m tools.skip_layernorm [--model MODEL.onnx] [--threads 1] [--seq 128] [--hidden 384] [--json]

Why `runtime/` disables ORT's `SkipLayerNormFusion` on CPU and `compress/ort_fusion.py` leaves residual adds
unfused. Two comparisons, each timed in interleaved blocks with a fresh session per block (bench/latency.py):

* op: one SkipLayerNormalization node (input, skip, gamma, beta, bias) against Add, Add, LayerNormalization on the
  same [1, seq, hidden] tensors, the second session with the fusion disabled so it stays three ops;
* model (with --model, a text encoder taking input_ids / attention_mask): the file as ORT loads it by default
  (SkipLayerNormFusion on) against the same file with the fusion disabled, at batch 1 and `seq` tokens.

Outputs of each pair are compared (max |difference|) before anything is timed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

FUSION = "SkipLayerNormFusion"


def _op_models(hidden: int) -> tuple[bytes, bytes]:
    from onnx import TensorProto, helper, numpy_helper

    shape = ["batch", "seq", hidden]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")]
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    rng = np.random.default_rng(1)
    params = {"gamma": 1 + 0.1 * rng.standard_normal(hidden), "beta": 0.1 * rng.standard_normal(hidden),
              "bias": 0.1 * rng.standard_normal(hidden)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()]
    fused = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"],
                              domain="com.microsoft", epsilon=1e-12)]
    apart = [helper.make_node("Add", ["x", "bias"], ["biased"]), helper.make_node("Add", ["biased", "skip"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]

    def model(nodes):
        m = helper.make_model(helper.make_graph(nodes, "g", inputs, output, inits), opset_imports=opsets)
        m.ir_version = 8
        return m.SerializeToString()

    return model(fused), model(apart)


def _session(source, threads: int, disabled: list[str]):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _compare(sources: dict[str, tuple[Any, list[str]]], feeds: dict[str, np.ndarray], *, threads: int,
             runs: int, rounds: int, warmup: int) -> dict[str, Any]:
    from bench.latency import measure_interleaved

    outs = {k: _session(src, threads, dis).run(None, feeds)[0] for k, (src, dis) in sources.items()}
    (a, b) = outs.values()

    def opener(src, dis):
        @contextlib.contextmanager
        def open_run():
            session = _session(src, threads, dis)
            yield lambda: session.run(None, feeds)
        return open_run

    stats = measure_interleaved({k: opener(*v) for k, v in sources.items()}, 1, warmup=warmup, runs=runs,
                                rounds=rounds)
    p50 = {k: s.p50 * 1000.0 for k, s in stats.items()}
    first, second = p50
    return {"p50_us": {k: round(v, 1) for k, v in p50.items()},
            "p50_ci95_us": {k: [round(x * 1000.0, 1) for x in s.p50_ci95] for k, s in stats.items()},
            "speedup": round(p50[first] / p50[second], 3), "max_abs_diff": float(np.abs(a - b).max())}


def measure(*, model: str | None = None, threads: int = 1, seq: int = 128, hidden: int = 384, runs: int = 2000,
            rounds: int = 8, warmup: int = 50) -> dict[str, Any]:
    from runtime.environment import describe

    rng = np.random.default_rng(0)
    fused, apart = _op_models(hidden)
    op_feeds = {n: rng.standard_normal((1, seq, hidden)).astype(np.float32) for n in ("x", "skip")}
    result = {"threads": threads, "seq": seq, "hidden": hidden, "environment": describe(threads),
              "op": _compare({"skip_layernorm": (fused, []), "add_layernorm": (apart, [FUSION])}, op_feeds,
                             threads=threads, runs=runs, rounds=rounds, warmup=warmup)}
    if model:
        feeds = {"input_ids": rng.integers(1000, 5000, (1, seq)).astype(np.int64),
                 "attention_mask": np.ones((1, seq), np.int64)}
        result["model"] = {"path": model, **_compare({"ort_default": (model, []), "fusion_disabled": (model, [FUSION])},
                                                     feeds, threads=threads, runs=max(100, runs // 10),
                                                     rounds=rounds, warmup=10)}
    return result


def format_report(r: dict[str, Any]) -> str:
    lines = [f"SkipLayerNormalization vs Add + LayerNormalization, [1, {r['seq']}, {r['hidden']}], "
             f"{r['threads']} thread(s), ONNX Runtime CPU"]
    for key in ("op", "model"):
        if key not in r:
            continue
        part = r[key]
        (a, ta), (b, tb) = part["p50_us"].items()
        where = f" {part['path']}" if key == "model" else ""
        lines.append(f"  {key}{where}: {a} p50 {ta:.1f} us, {b} p50 {tb:.1f} us -> {part['speedup']:.2f}x "
                     f"(outputs differ by at most {part['max_abs_diff']:.2e})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.skip_layernorm", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an .onnx text encoder (input_ids, attention_mask) to time both ways")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--runs", type=int, default=2000, help="timed op runs per side (model: a tenth)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.model and not Path(args.model).is_file():
        print(f"error: {args.model} is not a file", file=sys.stderr)
        return 2
    r = measure(model=args.model, threads=args.threads, seq=args.seq, hidden=args.hidden, runs=args.runs,
                rounds=args.rounds)
    print(json.dumps(r, indent=1) if args.json else format_report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
