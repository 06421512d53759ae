"""What every `compress` command shares: one-line errors instead of tracebacks, and the --on device options.
Its own module so that cli.py and cli_bench.py both import it and neither imports the other."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from common.errors import CompressError


RANK_ERRORS_ENV = "EDGE_COMPRESS_RANK_ERRORS"


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    _record_rank_error(message)
    sys.exit(code)


def _record_rank_error(message: str) -> None:
    """Under `--nproc`, a rank's error also goes to a file: torchrun may kill the other ranks and interleave
    or drop their output, and the launcher's one-line error should name the cause."""
    import os

    folder = os.environ.get(RANK_ERRORS_ENV)
    if folder and "RANK" in os.environ:
        try:
            Path(folder, f"rank-{os.environ['RANK']}.txt").write_text(message)
        except OSError:
            pass


def friendly_errors(fn):
    """Known failures become one line on stderr and a non-zero exit; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except CompressError as e:
            if debug:
                raise
            _fail(str(e), e.exit_code)
        except Exception as e:  # noqa: BLE001 - the CLI must never end in a traceback
            from runtime import RuntimeFailure

            if debug:
                raise
            if isinstance(e, RuntimeFailure):  # runtime/ ships alone, so its errors are not CompressErrors
                _fail(str(e), 2)
            if isinstance(e, KeyboardInterrupt):
                _fail("interrupted; rerun the same command to resume from the last finished stage", 130)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            _fail(f"unexpected {type(e).__name__}: {first[:300]} (rerun with --debug for the traceback)", 3)

    return wrapper


def device_options(fn):
    """--on, --ssh-config, --remote-python: score and time on an edge device over SSH (bench.device)."""
    fn = click.option("--remote-python", default=None, metavar="PATH",
                      help="The device's Python (default: python3 on its PATH).")(fn)
    fn = click.option("--ssh-config", default=None, metavar="FILE", help="An ssh_config file, passed to ssh -F.")(fn)
    return click.option("--on", default=None, metavar="[USER@]HOST[:PORT]",
                        help="Score and time the candidates on this device over SSH (its own runtime; the files go "
                        "to a temporary folder there, removed afterwards) instead of on this machine.")(fn)
