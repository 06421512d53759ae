"""The INT8 search's candidates and how one is chosen: what each candidate scored, the fastest within the bar
(latencies within NOISE of each other count as equal), and the interleaved timing the choice goes by."""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.errors import GateFailed


class SearchFailed(GateFailed):
    """No candidate met the bar; `result` holds every candidate tried and the sensitivity table."""

    def __init__(self, result: "SearchResult", message: str) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Candidate:
    name: str
    calibration: str
    float_nodes: tuple[str, ...]
    path: str
    val_accuracy: float
    accuracy_drop_pt: float
    agreement: float
    p50_ms: float = math.nan
    meets_bar: bool = False
    float_op_types: tuple[str, ...] = ()  # op types kept in float (compress.quantization.static.float_op_settings)
    activation_type: str = ""  # uint8 (U8S8) or int8 (S8S8); empty: not static INT8
    sqnr_db: float = math.nan  # of the logits against the FP32 source, on the judged rows
    changes: int = 0  # departures from the recipe's plain PTQ (method, float layers/op types, flavour, QAT)
    bias_corrected: bool = False  # quantized from the bias-corrected FP32 graph


@dataclass(frozen=True)
class SearchResult:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    sensitivity: tuple[dict, ...]
    fp32_val_accuracy: float
    fp32_p50_ms: float = math.nan  # the FP32 source, timed beside the candidates
    val_rows: int = 0  # rows the candidates were judged on (none of them used for calibration)
    judged_by: str = "labels"  # or "fp32 agreement": accuracy = top-1 agreement with the FP32 source
    latency_probe: tuple[dict, ...] = ()  # what compress.quantization.latency timed, and what it kept in float and why
    # the verdict of compress.quantization.search._ptq_then_bias_correction
    bias_correction: dict = field(default_factory=dict)

    @property
    def fp32_is_faster(self) -> bool:
        """INT8 that does not pay: the FP32 source beats the chosen candidate by more than the noise (seen with
        very narrow CNNs, where the Q/DQ work outweighs the int8 kernels)."""
        return self.chosen.meets_bar and self.fp32_p50_ms < self.chosen.p50_ms * (1 - NOISE)

    def to_dict(self) -> dict:
        rows = [{k: _json(v) for k, v in asdict(c).items() if k != "path"} for c in self.candidates]
        kept, flavour = set(self.chosen.float_op_types), self.chosen.activation_type
        why = [r["reason"] for r in self.latency_probe if r["p50_ms"] is not None and r["kept"]
               and (set(r["float_op_types"]) <= kept if r["float_op_types"] else r["activation_type"] == flavour)]
        if self.latency_probe and not why:
            why = ["INT8 paid or tied within noise for every op-type group and flavour timed"]
        return {"chosen": self.chosen.name, "fp32_val_accuracy": self.fp32_val_accuracy,
                "fp32_p50_ms": None if math.isnan(self.fp32_p50_ms) else round(self.fp32_p50_ms, 4),
                "fp32_is_faster": self.fp32_is_faster, "val_rows": self.val_rows, "judged_by": self.judged_by,
                "activation_type": self.chosen.activation_type, "float_op_types": list(self.chosen.float_op_types),
                "reason": "; ".join(why), "latency_probe": list(self.latency_probe),
                "bias_correction": self.bias_correction,
                "candidates": rows, "sensitivity": list(self.sensitivity)}


def _json(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no infinity or NaN (sqnr_db null: identical logits; p50_ms null: not timed)
    return list(v) if isinstance(v, tuple) else v


def latencies(paths: dict[str, Path], make_feeds: Callable[[Any], dict], batch: int, threads: int, *,
              warmup: int = 10, runs: int = 120, rounds: int = 2) -> dict[str, float]:
    """p50 ms of each model, interleaved in one run (`rounds` blocks of `runs` each); `make_feeds(runner)` gives the
    inputs to time."""
    from bench.latency import measure_interleaved
    from runtime import load

    def opener(path: Path):
        @contextlib.contextmanager
        def open_run():
            with load(path, threads=threads) as runner:
                feeds = make_feeds(runner)
                yield lambda: runner.run_raw(feeds)

        return open_run

    stats = measure_interleaved({n: opener(p) for n, p in paths.items()}, batch, warmup=warmup, runs=runs,
                                rounds=rounds)
    return {n: s.p50 for n, s in stats.items()}


NOISE = 0.10  # ratios measured within one run on these machines held to about +-10 %


def choose(candidates: list[Candidate], rows: int | None = None) -> Candidate:
    """The fastest candidate within the bar. Ties: latencies within the noise of the fastest count as equal, and
    among those accuracies within one row's worth (1 / `rows`; exact equality when `rows` is not given) count as
    equal; the tie goes to the fewest changes from plain PTQ (then fewer float layers, then the more accurate).
    With none within the bar, the most accurate (exactly; then the fewest changes)."""
    passing = [c for c in candidates if c.meets_bar]
    tol = 1.0 / rows if rows and passing else 0.0  # a failed search keeps the strictly most accurate to inspect
    pool = passing or list(candidates)
    if passing:
        fastest = min(c.p50_ms for c in passing)
        pool = [c for c in passing if c.p50_ms * (1 - NOISE) <= fastest] or passing  # NaN p50: no timing to go by
    best = max(c.val_accuracy for c in pool)
    near = [c for c in pool if c.val_accuracy >= best - tol - 1e-12]
    return min(near, key=lambda c: (c.changes, len(c.float_nodes) + len(c.float_op_types), -c.val_accuracy))


def format_table(result: SearchResult) -> str:
    lines = [f"{'candidate':<22} {'calibration':<11} {'act':<5} {'float layers':>12} {'val acc':>8} {'drop pt':>8} "
             f"{'p50 ms':>8}  bar   float op types"]
    for c in result.candidates:
        mark = "*" if c is result.chosen or c.name == result.chosen.name else " "
        lines.append(f"{c.name:<22} {c.calibration:<11} {c.activation_type:<5} {len(c.float_nodes):>12} "
                     f"{c.val_accuracy:>8.4f} {c.accuracy_drop_pt:>8.2f} {c.p50_ms:>8.3f}  "
                     f"{'ok' if c.meets_bar else 'miss'} {mark} {', '.join(c.float_op_types)}")
    lines.append(f"judged on {result.val_rows} validation rows by {result.judged_by}")
    return "\n".join(lines)


def copy_model(src: Path, dst: Path) -> None:
    import shutil

    from common.atomic import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
