"""`compress` command line: a thin face over the Python API."""
from __future__ import annotations

from pathlib import Path

import click

from common.errors import CompressError
from compress.cli.options import RANK_ERRORS_ENV, device_options, friendly_errors
from targets import names as target_names  # not `import targets`: the `targets` command below takes that name


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="edge-compress")
def main(debug: bool) -> None:
    """Train-then-shrink: train, prune, distill, INT8-quantize, compile per target, benchmark."""


@main.command()
@click.option("--recipe", "recipe_ref", default=None, help="Built-in recipe name or YAML path (default cnn-fashion).")
@click.option("--target", default=None,
              help=f"Target: {', '.join(target_names())} (`compress targets` says which work here; overrides the "
                   "recipe).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/default"),
              show_default=True, help="Run directory: checkpoints, ONNX files, artifacts, reports.")
@click.option("--data", "data_path", default=None, metavar="DATA",
              help="A folder of images (class sub-folders = labelled, else scored by agreement with the baseline), an "
                   ".npz (x, optional y, labels), a .csv (text, optional label), or the recipe's data set's folder.")
@click.option("--model", "model_factory", default=None, metavar="MODEL",
              help="An .onnx file (post-training INT8 only), a Hugging Face folder (config.json), or "
                   "package.module:factory called as factory(input_shape, num_classes) -> torch.nn.Module.")
@click.option("--weights", "weights", default=None, metavar="FILE",
              help="Pretrained weights for a factory's module (safetensors, or a state_dict); without --recipe the "
                   "baseline is the model as given (train.epochs 0).")
@click.option("--max-accuracy-drop", "max_drop", type=float, default=None, metavar="PT",
              help="The run's accuracy budget: points below the baseline on held-out rows (overrides "
                   "budget.max_accuracy_drop, default 1.0). Nothing outside it ships with exit 0.")
@click.option("--runtime", type=click.Choice(["onnxruntime", "litert", "auto"]), default=None,
              help="cpu target: the runtime that may ship (overrides target.runtime, default onnxruntime); "
                   "auto ships the fastest within the budget on either.")
@click.option("--dump-config", is_flag=True, help="Print the effective recipe as YAML and exit.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train with this many processes (torchrun + DistributedDataParallel; gloo on CPU, NCCL on CUDA).")
@click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
              help="Where the training stages run (overrides train.device, default auto: CUDA when torch sees a "
                   "GPU); under --nproc each rank uses GPU LOCAL_RANK. Cached stages stay valid across devices.")
@device_options
@friendly_errors
def run(recipe_ref: str | None, target: str | None, out_dir: Path, data_path: str | None,
        model_factory: str | None, weights: str | None, max_drop: float | None, runtime: str | None,
        dump_config: bool, nproc: int, device: str | None, on: str | None, ssh_config: str | None,
        remote_python: str | None) -> None:
    """Run the whole pipeline and write report.json / report.md to --out."""
    import dataclasses
    import os

    from compress.recipe import RecipeError, dump_recipe, load_recipe

    from compress.cli import inputs as cli_inputs

    recipe = load_recipe(cli_inputs.base_recipe(recipe_ref, model_factory, data_path))
    if target is not None and target not in target_names():  # the flag's message; a recipe's names target.name
        from targets import unknown_message

        raise RecipeError(unknown_message(target))
    try:
        if target is not None:
            recipe = recipe.replace(target=dataclasses.replace(recipe.target, name=target))
        if runtime is not None:
            recipe = recipe.replace(target=dataclasses.replace(recipe.target, runtime=runtime))
        recipe = cli_inputs.apply(recipe, model_factory, weights, data_path,
                                  epochs_given=cli_inputs.sets_epochs(recipe_ref))
        if max_drop is not None:
            recipe = recipe.replace(budget=dataclasses.replace(recipe.budget, max_accuracy_drop=max_drop))
        if device is not None:
            recipe = recipe.replace(train=dataclasses.replace(recipe.train, device=device))
        if on is not None or ssh_config or remote_python:
            b = recipe.bench
            if not (on or b.on):
                raise RecipeError("--ssh-config and --remote-python go with --on HOST (the device to bench on)")
            recipe = recipe.replace(bench=dataclasses.replace(b, on=on or b.on, ssh_config=ssh_config or b.ssh_config,
                                                              remote_python=remote_python or b.remote_python))
    except (ValueError, TypeError) as e:
        raise RecipeError(str(e)) from None
    from compress.plugins import choose

    family = choose(recipe).family  # every registry cross-check, before any work
    if dump_config:
        click.echo(dump_recipe(recipe), nl=False)
        return
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from compress.stages.widths import refuse_under_torchrun

        refuse_under_torchrun(recipe, nproc)
        if family.kind == "text":
            raise RecipeError("--nproc above 1 is not supported for Transformer recipes yet; run with --nproc 1")
        check_device(recipe.train.device, nproc)
        return launch_distributed(nproc, recipe, target, out_dir, data_path)
    check_device(recipe.train.device, int(os.environ.get("WORLD_SIZE", "1")))
    from compress.pipeline import run as run_pipeline
    from compress.shipping.budget import BudgetMissed

    try:
        report = run_pipeline(recipe, out_dir)
    except BudgetMissed as e:
        print_summary(e.report, out_dir)
        raise
    if report is not None:
        print_summary(report, out_dir)


def check_device(setting: str, nproc: int) -> None:
    """A one-line error before any work when the device cannot be had here (cuda without CUDA, cuda:N beyond the
    GPUs, more ranks than GPUs for NCCL); under torchrun, join the process group on the recipe's device."""
    import os

    import torch

    from compress.training import device, distributed

    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if nproc > 1:
        device.check_ranks(nproc, setting, cuda_available=available, device_count=count)
    if "WORLD_SIZE" in os.environ:
        distributed.init(setting)  # the pipeline's own init() then finds the group joined
    device.current(setting)


def launch_distributed(nproc: int, recipe, target: str | None, out_dir: Path, data_path: str | None) -> None:
    """Re-run this command under torchrun; the effective recipe travels as a file so every rank sees the same."""
    import subprocess

    from common.atomic import write_text
    from compress.training.distributed import launch_command
    from compress.driver import prepare_out_dir
    from compress.recipe import dump_recipe

    import os
    import tempfile

    out_dir = prepare_out_dir(out_dir)
    recipe_file = out_dir / "recipe.effective.yaml"
    write_text(recipe_file, dump_recipe(recipe))
    with tempfile.TemporaryDirectory(prefix="edge-compress-ranks-") as errors:  # not in out_dir: ranks clean it
        env = {**os.environ, RANK_ERRORS_ENV: errors}
        done = subprocess.run(launch_command(nproc, ["run", "--recipe", str(recipe_file), "--out", str(out_dir)]),
                              env=env)
        reports = sorted(Path(errors).glob("rank-*.txt"), key=lambda p: p.stat().st_mtime)
        first = f"rank {reports[0].stem.split('-')[1]}: {reports[0].read_text().strip()}" if reports else \
            "the failing rank's error is printed above"
    if done.returncode != 0:
        raise CompressError(f"distributed run with {nproc} processes failed (exit {done.returncode}); {first}")


def print_summary(report: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from bench.formatting import budget_line, drop_interval, metric_word
    from bench.report import summary_rows

    header, rows = summary_rows(report)
    table = Table(title=f"{report['recipe']['name']} -> {report['target']} ({bench_device(report)})")
    for i, h in enumerate(header):
        left = h in ("variant", "runtime", "precision")
        table.add_column(h, justify="left" if left else "right",
                         min_width=max((len(r[i]) for r in rows), default=0) if left else None)
    for r in rows:
        table.add_row(*r)
    terminal = Console()
    console = terminal if terminal.is_terminal else Console(width=200)  # a log keeps every column of the table
    console.print(table)
    c = report.get("comparison")
    if c:
        speed = ", ".join(f"b{b} {v:.2f}x" for b, v in c["speedup_p50"].items())
        console.print(f"compressed vs baseline: {metric_word(report)} drop {c['accuracy_drop_pt']:.2f} pt"
                      f"{drop_interval(c)}, "
                      f"p50 speed-up {speed}, "
                      f"{c['size_ratio']:.1f}x smaller", highlight=False)
    if report.get("budget"):
        console.print(budget_line(report), highlight=False, soft_wrap=True)
    console.print(stage_times(report), highlight=False, soft_wrap=True)
    console.print(f"report: {out_dir / 'report.json'}, {out_dir / 'report.md'}")


def bench_device(report: dict) -> str:
    """The device the benchmark ran on, for the summary header: the GPU when a row ran on ONNX Runtime's CUDA
    provider, else the CPU and its INT8 class (also for a GPU target whose provider fell back to the CPU)."""
    env = report["environment"]
    if "CUDAExecutionProvider" in env.get("providers_used", []):
        gpu = env.get("gpu") or {}
        return f"{gpu.get('name', 'GPU (name not reported)')}, ONNX Runtime CUDA"
    fell_back = any(r.get("fell_back_to_cpu") for r in report.get("variants", []))
    return f"{env['cpu']}, {env.get('int8_class', '?')}" + (", CPU fallback: no GPU provider here" if fell_back else "")


def stage_times(report: dict) -> str:
    """One line: each stage's wall time in this run (cached stages show the time they once took)."""
    parts = [f"{s['name']} {s['wall_s']:.0f} s" + (" (cached)" if s["cached"] else "") for s in report["stages"]]
    ran = sum(s["wall_s"] for s in report["stages"] if not s["cached"])
    return f"stages: {', '.join(parts)}; {ran / 60:.1f} min run now"


@main.command()
@friendly_errors
def targets() -> None:
    """List the targets and whether each is usable on this machine."""
    from targets import availability

    for name, (ok, why) in availability().items():
        click.echo(f"{name:<8} {'yes' if ok else 'no ':<4} {why}")


@main.command()
@friendly_errors
def recipes() -> None:
    """List the built-in recipes."""
    from compress.recipe import builtin_recipes

    for name in builtin_recipes():
        click.echo(name)


def _register_optional_commands() -> None:
    """Commands that live in their own modules (bench and the CI gate)."""
    try:
        from compress.cli.bench import bench, check
    except ImportError:
        return
    main.add_command(bench)
    main.add_command(check)


_register_optional_commands()

if __name__ == "__main__":
    main()
