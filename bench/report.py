"""Measure every variant (accuracy + latency through runtime/) and write report.json / report.md."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runtime import environment
from bench.accuracy import discordant_counts, latency_feeds, paired_drop_interval, predict_split
from bench.formatting import (budget_cell, budget_line, drop_interval, fmt_bytes, memory_batch, metric_word,
                              peak_rss)
from bench.latency import summarize
from bench.variants import CPU_PROVIDER, CUDA_PROVIDER, RUNTIME_NAMES, Measured, Variant, provider_fields
from runtime.measure import as_model_input, fixed_batch, interleaved_blocks, timed_batches
from runtime.memory import measure_peak_rss
from common.compare import sqnr_db, top1_agreement

SCHEMA_VERSION = 1
BASELINE = "baseline"
CANDIDATE = "compressed"


UNLABELLED = ", unlabelled: agreement = top-1 agreement with the baseline"
ACCURACY_METRIC = {"labels": "accuracy", "baseline": "top1_agreement_vs_baseline"}


def runtime_cell(row: dict[str, Any]) -> str:
    """The tables' runtime column: the row's runtime, with the provider that ran it when a GPU provider was asked
    for ("onnxruntime (CUDA)", or "onnxruntime (CPU fallback)"): never the GPU's name for a CPU figure. report.json
    keeps `runtime` as the runtime's name and says the rest in `provider` / `fell_back_to_cpu`."""
    runtime = row.get("runtime", "-")
    if "fell_back_to_cpu" not in row:
        return runtime
    return f"{runtime} (CPU fallback)" if row["fell_back_to_cpu"] else \
        f"{runtime} ({row['provider'].removesuffix('ExecutionProvider')})"


def bench_variants(variants: list[Variant], split, *, batch_sizes: tuple[int, ...], warmup: int, runs: int,
                   rounds: int, threads: int, seq_length: int | None = None,
                   run_noise_pct: float = 0.0, heldout_extra=None,
                   providers: tuple[str, ...] | list[str] | None = None, device=None) -> list[dict[str, Any]]:
    """Accuracy on `split` and interleaved latency of every variant, in one run.

    `providers`: ONNX Runtime's providers the target runs on (the gpu target's CUDA first); the .onnx variants are
    scored and timed on those this onnxruntime has (CPU with a warning otherwise), each row records the provider it
    really ran on, and rows on CUDA are timed with I/O binding (inputs and outputs stay on the GPU).

    `split` holds images (`x`) or token ids (`input_ids`, `attention_mask`); text is timed on real rows cut or
    padded to `seq_length`. `heldout_extra` (the validation split) adds each row's `heldout` accuracy and
    discordant counts on it and `split` together: what the run's accuracy budget is judged on.

    `device` (bench.device.SshDevice): the variants are scored and timed there, with its own runtime, and every
    row says so in `measured_on`; the statistics are computed here from its raw timings, as for a local bench."""
    timing = dict(batch_sizes=tuple(batch_sizes), warmup=warmup, runs=runs, rounds=rounds, threads=threads)
    if device is not None:
        if providers and providers[0] != CPU_PROVIDER:
            from bench.device import DeviceError

            raise DeviceError(f"--on benches on the device's CPU (ONNX Runtime's CPU provider, LiteRT) in this "
                              f"version; a target that runs on {providers[0]} is benched on this machine")
        measured = device.measure(variants, split, heldout_extra, **timing)
    else:
        measured = measure_here(variants, split, heldout_extra, seq_length=seq_length, providers=providers, **timing)
    return assemble_rows(variants, split, heldout_extra, measured, run_noise_pct)


def measure_here(variants: list[Variant], split, heldout_extra, *, batch_sizes: tuple[int, ...], warmup: int,
                 runs: int, rounds: int, threads: int, seq_length: int | None, providers) -> Measured:
    import contextlib

    from runtime import load

    use = None
    if providers:
        from runtime.onnx_backend import ProviderFallbackWarning, providers_for

        use, why = providers_for(providers)
        if why:
            import warnings

            warnings.warn(f"bench: {why}; every row says so (fell_back_to_cpu)", ProviderFallbackWarning, stacklevel=3)

    def open_variant(path: Path):
        return load(path, threads=threads, **({"providers": use} if use and Path(path).suffix == ".onnx" else {}))

    logits, extra_logits, fields = {}, {}, {}
    input_specs = {}
    fixed: dict[str, int | None] = {}
    for v in variants:
        with open_variant(v.path) as runner:
            logits[v.name] = predict_split(runner, split)
            if heldout_extra is not None:
                extra_logits[v.name] = predict_split(runner, heldout_extra)
            input_specs[v.name] = runner.inputs
            fixed[v.name] = fixed_batch(runner)
            fields[v.name] = {"runtime": RUNTIME_NAMES.get(runner.backend, runner.backend),
                              **provider_fields(getattr(runner, "providers", None), providers)}

    if not any(v.per_batch for v in variants):
        batch_sizes = timed_batches(batch_sizes, set(fixed.values()))

    def feeds_of(v: Variant, batch: int) -> dict:
        if v.path_at(batch) != v.path and (v.name, batch) not in input_specs:  # its own specs (and quantization)
            with open_variant(v.path_at(batch)) as runner:
                input_specs[(v.name, batch)] = runner.inputs
        specs = input_specs.get((v.name, batch), input_specs[v.name])  # by position: a .tflite names them args_0..
        arrays = latency_feeds(split, batch, specs[0].name, seq_length).values()
        return {spec.name: as_model_input(spec, a) for spec, a in zip(specs, arrays)}

    def opener(v: Variant, batch: int):
        feeds = feeds_of(v, batch)

        @contextlib.contextmanager
        def open_run():
            with open_variant(v.path_at(batch)) as runner:
                if runner.providers and runner.providers[0] == CUDA_PROVIDER:  # no host copies in the timed runs
                    yield runner.bound_run(feeds)
                else:
                    yield lambda: runner.run_raw(feeds)

        return open_run

    from common.progress import progress_bar

    timed = {b: [v for v in variants if v.runs_at(b, fixed[v.name])] for b in batch_sizes}
    blocks: dict[int, dict[str, list]] = {}
    with progress_bar("latency", sum(len(vs) for vs in timed.values()) * rounds) as advance:
        for b, at_b in timed.items():  # one interleaved bench per batch size, of every variant that runs it
            blocks[b] = interleaved_blocks({v.name: opener(v, b) for v in at_b}, warmup=warmup, runs=runs,
                                           rounds=rounds, on_block=advance)
    top = max(batch_sizes)  # the largest batch holds the most activations; the tables show it
    memory = {}
    for v in variants:  # after timing, so the child processes never share the cores with a timed block
        on_cpu = fields[v.name]["provider"] in ("CPU", CPU_PROVIDER)  # the child runs on the CPU: no GPU figure
        memory[v.name] = measure_peak_rss(v.path_at(top), feeds_of(v, top), threads=threads) \
            if on_cpu and v in timed[top] else None
        if fields[v.name]["provider"] == CUDA_PROVIDER:
            fields[v.name]["io_binding"] = "inputs copied to the GPU once, outputs left there: no host copies timed"
    return Measured(logits, extra_logits, fields, blocks, memory, top)


def assemble_rows(variants: list[Variant], split, heldout_extra, measured: Measured,
                  run_noise_pct: float) -> list[dict[str, Any]]:
    """The report's rows from what was measured: accuracy, agreement, SQNR and discordant rows against the
    baseline's logits, latency statistics from the raw blocks, memory; the same whichever machine measured."""
    import numpy as np

    logits = measured.logits
    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        acc = float((logits[v.name].argmax(1) == split.y).mean())
        rows[v.name] = {"name": v.name, "description": v.description, "artifact": str(v.path),
                        "precision": v.precision, "accuracy": acc, "size_bytes": v.path.stat().st_size,
                        **measured.fields[v.name], "latency_ms": {}}
        if measured.measured_on is not None:
            rows[v.name]["measured_on"] = measured.measured_on["host"]
    reference = logits.get(BASELINE, next(iter(logits.values())))
    for v in variants:
        rows[v.name]["top1_agreement_vs_baseline"] = top1_agreement(reference, logits[v.name])
        sqnr = sqnr_db(reference, logits[v.name])
        rows[v.name]["logit_sqnr_db_vs_baseline"] = round(sqnr, 2) if math.isfinite(sqnr) else None
        rows[v.name]["top1_agreement_confident"] = confident_agreement(reference, logits[v.name])
        rows[v.name]["discordant_vs_baseline"] = discordant_counts(split.y, reference, logits[v.name])
    if heldout_extra is not None:
        add_heldout(rows, split.y, heldout_extra.y, logits, measured.extra_logits)
    for b, by_variant in measured.blocks.items():
        for name, blocks in by_variant.items():
            stats = summarize(np.concatenate(blocks), b, blocks=blocks, run_noise=run_noise_pct / 100.0)
            rows[name]["latency_ms"][str(b)] = stats.to_dict()
    for v in variants:
        peak = measured.memory.get(v.name)
        rows[v.name]["memory_mib"] = {str(measured.top): peak} if peak else {}
    return [rows[v.name] for v in variants]


CONFIDENT = 0.5  # the baseline's top softmax probability at or above which a row counts as one it is sure of


def confident_agreement(reference, logits) -> dict[str, Any]:
    """Top-1 agreement with the baseline on the rows the baseline is confident about (softmax max >= CONFIDENT; the
    outputs themselves when they are probabilities already): flips there matter more than on rows the baseline
    itself hesitates on."""
    import numpy as np

    if (reference >= 0).all() and np.allclose(reference.sum(1), 1.0, atol=1e-3):  # a model that ends in Softmax
        probability = reference.max(1)
    else:
        ref = reference - reference.max(1, keepdims=True)
        probability = np.exp(ref).max(1) / np.exp(ref).sum(1)
    sure = probability >= CONFIDENT
    agreement = float((reference[sure].argmax(1) == logits[sure].argmax(1)).mean()) if sure.any() else None
    return {"min_probability": CONFIDENT, "rows": int(sure.sum()), "agreement": agreement}


def add_heldout(rows: dict[str, dict[str, Any]], test_y, extra_y, logits: dict, extra_logits: dict) -> None:
    """Each row's accuracy on every held-out row (test and validation together) and its discordant rows against
    the baseline there."""
    import numpy as np

    labels = np.concatenate([test_y, extra_y])
    joined = {name: np.concatenate([logits[name], extra_logits[name]]) for name in logits}
    reference = joined.get(BASELINE, next(iter(joined.values())))
    for name, out in joined.items():
        rows[name]["heldout"] = {"rows": int(len(labels)), "accuracy": float((out.argmax(1) == labels).mean()),
                                 "discordant_vs_baseline": discordant_counts(labels, reference, out)}


def compare(rows: list[dict[str, Any]], baseline: str = BASELINE, candidate: str = CANDIDATE) -> dict[str, Any]:
    by_name = {r["name"]: r for r in rows}
    if baseline not in by_name or candidate not in by_name:
        return {}
    base, cand = by_name[baseline], by_name[candidate]
    pairs = cand.get("discordant_vs_baseline")
    interval = {"accuracy_drop_ci95_pt": list(paired_drop_interval(**pairs))} if pairs else {}
    return {
        "baseline": baseline,
        "candidate": candidate,
        "accuracy_drop_pt": round(100.0 * (base["accuracy"] - cand["accuracy"]), 4),
        **interval,
        "speedup_p50": {b: base["latency_ms"][b]["p50"] / cand["latency_ms"][b]["p50"]
                        for b in base["latency_ms"] if b in cand["latency_ms"]},
        "size_ratio": base["size_bytes"] / cand["size_bytes"],
    }


def measure_variants(recipe, data, variants: list[Variant], out_dir: Path,
                     providers: tuple[str, ...] | None = None, device=None) -> list[dict[str, Any]]:
    """Bench every variant on the test split (accuracy and latency) and score it on every held-out row;
    `providers`: the target's ONNX Runtime providers (None: the CPU); `device`: a bench.device.SshDevice that
    scores and times them instead of this machine."""
    b = recipe.bench
    rows = bench_variants(variants, data.test, batch_sizes=b.batch_sizes, warmup=b.warmup, runs=b.runs,
                          rounds=b.rounds, threads=b.threads, seq_length=getattr(data, "max_length", None),
                          run_noise_pct=b.run_noise_pct, heldout_extra=data.val, providers=providers, device=device)
    for row in rows:
        row["artifact"] = str(Path(row["artifact"]).relative_to(out_dir))
    return rows


def assemble_report(recipe, data, rows: list[dict[str, Any]], stages: list[dict], extra: dict) -> dict:
    from common.version import __version__

    b = recipe.bench
    seq_length = getattr(data, "max_length", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "edge-compress", "version": __version__},
        "recipe": recipe.to_dict(),
        "target": recipe.target.name,
        "dataset": {"name": data.name, "split": "test", "samples": len(data.test), "fingerprint": data.fingerprint},
        # what `accuracy` means in every row and in the budget: the data's labels, or (unlabelled data) top-1
        # agreement with the baseline, whose predictions stand in for labels
        "accuracy_metric": ACCURACY_METRIC[getattr(data, "truth", "labels")],
        "environment": {**environment.describe(b.threads, providers_used(rows)),
                        "timing": "blocks of runs cycled per variant",
                        "run_noise_pct": b.run_noise_pct,
                        **({"sequence_length": seq_length} if seq_length else {})},
        "variants": rows,
        "comparison": compare(rows),
        "stages": stages,
        **extra,
    }


def providers_used(rows: list[dict[str, Any]]) -> list[str]:
    """Every execution provider the rows' sessions really used (ONNX Runtime's names; LiteRT rows add none)."""
    return sorted({p for r in rows for p in r.get("providers", []) if p.endswith("ExecutionProvider")})


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    batches = list(report["variants"][0]["latency_ms"]) if report["variants"] else []
    base = next((r for r in report["variants"] if r["name"] == BASELINE), None)
    header = ["variant", "runtime", "precision", metric_word(report), "size"] + [f"p50 b{b} (ms)" for b in batches] + \
             [f"speed-up b{b}" for b in batches]
    top = memory_batch(report["variants"])
    if top:
        header.append(f"peak RSS b{top}")
    judged = "budget" in report
    if judged:
        header.append("budget (drop pt)")
    rows = []
    for r in report["variants"]:
        timed = [b for b in batches if b in r["latency_ms"]]
        lat = [f"{r['latency_ms'][b]['p50']:.3f}" if b in timed else "-" for b in batches]
        speed = [f"{base['latency_ms'][b]['p50'] / r['latency_ms'][b]['p50']:.2f}x" if base and b in timed else "-"
                 for b in batches]
        rows.append([r["name"], runtime_cell(r), r["precision"], f"{r['accuracy']:.4f}",
                     fmt_bytes(r["size_bytes"])] + lat + speed +
                    ([peak_rss(r, top)] if top else []) + ([budget_cell(r)] if judged else []))
    return header, rows


def to_markdown(report: dict) -> str:
    header, rows = summary_rows(report)
    c = report.get("comparison", {})
    env = report["environment"]
    lines = [
        f"# Compression report: {report['recipe']['name']} -> {report['target']}",
        "",
        f"Dataset {report['dataset']['name']} ({report['dataset']['samples']} {report['dataset']['split']} samples"
        f"{UNLABELLED if metric_word(report) == 'agreement' else ''}); "
        f"{env['cpu']} ({env.get('int8_class', '?')}), {env['threads']} threads; onnxruntime {env['versions'].get('onnxruntime', '?')}.",
        *([f"Latency measured on: {report['latency_measured_on']}."] if report.get("latency_measured_on") else []),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    if c:
        speed = ", ".join(f"batch {b}: {v:.2f}x" for b, v in c["speedup_p50"].items())
        lines += [f"**{c['candidate']} vs {c['baseline']}**: {metric_word(report)} drop {c['accuracy_drop_pt']:.2f} pt{drop_interval(c)}; "
                  f"p50 speed-up {speed}; {c['size_ratio']:.1f}x smaller.", ""]
    if report.get("budget"):
        lines += [budget_line(report) + ".", ""]
    notes = [f"- {s['name']}: {s['metrics']['note']}" for s in report.get("stages", []) if s.get("metrics", {}).get("note")]
    if notes:
        lines += ["Notes:", *notes, ""]
    lines += ["| stage | cached | wall (s) |", "|---|---|---|"]
    lines += [f"| {s['name']} | {'yes' if s['cached'] else 'no'} | {s['wall_s']:.1f} |" for s in report["stages"]]
    return "\n".join(lines) + "\n"


def write_reports(report: dict, out_dir: Path) -> None:
    from bench.html import to_html
    from common.atomic import write_json, write_text

    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", to_markdown(report))
    write_text(out_dir / "report.html", to_html(report))
