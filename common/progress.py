"""Progress bars (rich) that stay quiet when the output is not a terminal."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[..., None]]:
    """Yields `advance(**fields)`. On a terminal: a live bar; otherwise a line every ~10 % of the work.
    Under torchrun only rank 0 reports."""
    import os

    if os.environ.get("RANK", "0") != "0":
        yield lambda **_: None
        return
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description:<14}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(label, total=total, info="")

            def advance(**fields: float) -> None:
                info = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
                progress.update(task, advance=1, info=info)

            yield advance
        return
    state = {"done": 0, "next": max(1, total // 10), "start": time.perf_counter()}

    def advance_plain(**fields: float) -> None:
        state["done"] += 1
        if state["done"] >= state["next"] or state["done"] == total:
            info = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
            elapsed = time.perf_counter() - state["start"]
            print(f"  {label}: {state['done']}/{total} {info} ({elapsed:.0f}s)", file=sys.stderr, flush=True)
            state["next"] += max(1, total // 10)

    yield advance_plain
