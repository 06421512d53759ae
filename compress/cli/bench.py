"""`compress bench` and `compress check`: thin faces over bench.standalone and bench.gate (no torch)."""
from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import device_options, friendly_errors
from common.errors import CompressError, GateFailed


def _batches(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(b) for b in value.replace(" ", "").split(",") if b)
    except ValueError:
        raise CompressError(f"--batch {value!r} must be a comma-separated list of integers, e.g. 1,32") from None
    if not out or any(b < 1 for b in out):
        raise CompressError(f"--batch {value!r} must list positive batch sizes, e.g. 1,32")
    return out


@click.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--data", default=None, help="'fashion-mnist' (Debian's dataset-fashion-mnist) or a directory with its "
              "IDX files: accuracy on the test split; or an .npz with x (model-ready rows) and optionally y (labels): "
              "accuracy, or without y top-1 agreement with the baseline and logit SQNR; or a folder of images "
              "(preprocessed as the first artifact's sidecar says; class sub-folders give accuracy). Without it: "
              "random inputs, latency only.")
@click.option("--inputs", default=None, metavar="FILE.npz", help="One array per model input, named like the inputs: "
              "times models with several inputs or recurrent state on them (latency only).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N test samples.")
@click.option("--batch", "batch", default="1,32", show_default=True, help="Batch sizes to time, comma-separated.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench-out"), show_default=True,
              help="Directory for report.json, report.md and report.html.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="ONNX Runtime intra-op threads.")
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True, help="Timed runs per variant and batch.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Warm-up runs per block.")
@click.option("--rounds", type=click.IntRange(min=1), default=8, show_default=True,
              help="Blocks per variant, cycled A, B, A, B so drift cancels; runs are split among them. "
              "Per-round figures give the gate its paired ratios (needs >= 3).")
@click.option("--run-noise-pct", type=click.FloatRange(min=0, max=100, max_open=True), default=0.0, show_default=True,
              help="This machine's shift between whole benches, in percent (python -m tools.stability prints it); "
              "widens p50_repeat_pi95 by it.")
@click.option("--baseline", default=None, help="Name of the baseline artifact (default: the first).")
@click.option("--candidate", default=None, help="Name of the artifact compared with it (default: the last other one).")
@device_options
@friendly_errors
def bench(artifacts: tuple[str, ...], data: str | None, inputs: str | None, limit: int | None, batch: str,
          out_dir: Path, threads: int, runs: int, warmup: int, rounds: int, run_noise_pct: float, baseline: str | None,
          candidate: str | None, on: str | None, ssh_config: str | None, remote_python: str | None) -> None:
    """Benchmark existing artifacts (PATH or NAME=PATH), no pipeline: accuracy, latency, size, in one run.

    The first artifact (or --baseline) is the baseline; speed-ups are ratios to it measured in the same run.
    """
    from bench.device import DeviceSpec, SshDevice
    from bench.standalone import bench_artifacts, parse_artifacts, to_markdown, write_all

    device = SshDevice(DeviceSpec.parse(on, ssh_config, remote_python)) if on else None
    report = bench_artifacts(parse_artifacts(artifacts), data=data, limit=limit, batch_sizes=_batches(batch),
                             threads=threads, runs=runs, warmup=warmup, rounds=rounds, baseline=baseline,
                             candidate=candidate, run_noise_pct=run_noise_pct, inputs=inputs, device=device)
    paths = write_all(report, out_dir)
    click.echo(to_markdown(report), nl=False)
    click.echo("report: " + ", ".join(str(p) for p in paths))


@click.command()
@click.option("--report", "report_path", required=True, type=click.Path(path_type=Path), help="The new report.json.")
@click.option("--baseline", "baseline_path", required=True, type=click.Path(path_type=Path),
              help="The committed / previous report.json to compare with.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
              help="Largest allowed accuracy drop of the variant, in points, vs the baseline report.")
@click.option("--max-latency-regression", type=float, default=10.0, show_default=True,
              help="Largest allowed p50 increase in percent; it fails only when the 95% CIs are apart by more too.")
@click.option("--variant", default=None, help="Variant to gate (default: the baseline report's comparison candidate, "
              "usually 'compressed').")
@click.option("--batch", "batch", default=None, help="Batch sizes to gate, comma-separated (default: all in both).")
@click.option("--latency-mode", type=click.Choice(["ratio", "absolute", "both"]), default="ratio", show_default=True,
              help="ratio: p50 relative to the run's own baseline variant (cancels machine drift; default). "
              "absolute: p50 in ms (only on a dedicated machine). both: either fails.")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Also append the result as a markdown table to this file (e.g. $GITHUB_STEP_SUMMARY).")
@friendly_errors
def check(report_path: Path, baseline_path: Path, max_accuracy_drop: float, max_latency_regression: float,
          variant: str | None, batch: str | None, latency_mode: str, summary_path: Path | None) -> None:
    """CI gate: exit 0 when REPORT is within bounds of BASELINE, 1 (with a table) when not, 2 on bad input."""
    from bench.gate import check_files, summary_line, table_rows, to_markdown

    result = check_files(report_path, baseline_path, variant=variant, max_accuracy_drop=max_accuracy_drop,
                         max_latency_regression=max_latency_regression, batches=_batches(batch), mode=latency_mode)
    _print_table(result, table_rows)
    if summary_path is not None:
        with open(summary_path, "a") as f:
            f.write(to_markdown(result))
    if not result.passed:
        raise GateFailed(f"check failed for {result.variant!r}: {summary_line(result)}")
    click.echo(summary_line(result))


def _print_table(result, table_rows) -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = table_rows(result)
    verdict = "[green]passed[/green]" if result.passed else "[red]FAILED[/red]"
    table = Table(title=f"compress check: {result.variant} {verdict} (latency mode: {result.mode})")
    for h in header:
        table.add_column(h, justify="right" if h in ("baseline", "new") else "left",
                         overflow="fold" if h == "detail" else "ellipsis")
    for r in rows:
        style = "red" if r[4] == "FAIL" else None
        table.add_row(*r, style=style)
    console = Console(width=max(140, Console().width))
    console.print(table)
    for w in result.warnings:
        console.print(f"warning: {w}")
