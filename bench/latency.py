"""Latency like hyperfine / trtexec: warm-up, timed runs in blocks cycled A, B, A, B so drift cancels."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

from runtime.measure import OpenFn, interleaved_blocks


@dataclass(frozen=True)
class LatencyStats:
    p50: float
    p90: float
    p99: float
    mean: float
    p50_ci95: tuple[float, float]
    runs: int
    throughput: float  # samples per second at this batch size, from the median
    block_p50: tuple[float, ...] = ()  # median of each timed block, in round order (paired ratios in the gate)
    p50_repeat_pi95: tuple[float, ...] = ()  # where a repeat run's p50 should land, 95 % (see repeat_interval)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("p50_ci95", "block_p50", "p50_repeat_pi95"):
            d[key] = list(d[key])
        return d


def bootstrap_median_ci(samples_ms: np.ndarray, *, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(samples_ms), size=(resamples, len(samples_ms)))
    medians = np.median(samples_ms[idx], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def block_bootstrap_median_ci(blocks: list[np.ndarray], *, resamples: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """CI of the median that keeps the blocks: resample blocks, then samples within each chosen block.

    Samples in one block share the machine's state (another job's load, clocks, caches); a bootstrap over
    all samples treats them as independent and gave intervals that held a repeat run's median 16-20 % of
    the time on this shared box."""
    rng = np.random.default_rng(seed)
    m = min(len(b) for b in blocks)
    arr = np.stack([np.asarray(b[:m]) for b in blocks])  # k x m (blocks have equal length here)
    k = len(arr)
    which = rng.integers(0, k, size=(resamples, k))
    within = rng.integers(0, m, size=(resamples, k, m))
    medians = np.median(arr[which[..., None], within].reshape(resamples, -1), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


# two-sided 95 % quantiles of Student's t by degrees of freedom (no scipy at run time)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"t quantile needs at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df)  # Cornish-Fisher: 2.0365 at df 31 (exact 2.0395)


def repeat_interval(block_medians: np.ndarray, center: float, run_noise: float = 0.0) -> tuple[float, float]:
    """95 % prediction interval for the p50 of a repeat run with as many blocks, on the log scale.

    A confidence interval says where the true median is; a second run's median carries its own noise as well,
    so even a well-calibrated 95 % CI holds a repeat's median only ~83 % of the time (the difference of two
    estimates has sqrt(2) times their spread). This interval is the one to read as "a rerun lands here":
    center * exp(+-t(k-1) * s * sqrt(2 / k)), s the spread of the k block medians' logs. Blocks open their own
    session each, so session-to-session and load-to-load variation is inside s. Exact for the geometric mean of
    the block medians; for the pooled p50 it sits 1-3 points under 95 % when blocks differ much more than
    samples within them (the pooled median then spreads like a median of block levels, up to pi/2 the variance).

    `run_noise` (relative sd, e.g. 0.08) adds a shift of the whole bench that blocks cannot see: a shared machine
    that is faster or slower for tens of seconds. It is a property of the machine, measured by tools.stability
    (`sigma_run`), and enters both benches: half-width t * sqrt(2 * (s^2 / k + run_noise^2))."""
    logs = np.log(np.asarray(block_medians, dtype=float))
    k = len(logs)
    half = t975(k - 1) * float(np.sqrt(2.0 * (np.var(logs, ddof=1) / k + run_noise ** 2)))
    return center * float(np.exp(-half)), center * float(np.exp(half))


def summarize(samples_ms: np.ndarray, batch_size: int, blocks: list[np.ndarray] | None = None, *,
              run_noise: float = 0.0) -> LatencyStats:
    p50, p90, p99 = (float(v) for v in np.percentile(samples_ms, [50, 90, 99]))
    ci = block_bootstrap_median_ci(blocks) if blocks and len(blocks) >= 3 else bootstrap_median_ci(samples_ms)
    ci = (min(ci[0], p50), max(ci[1], p50))
    block_p50 = tuple(float(np.median(b)) for b in blocks) if blocks else ()
    pi: tuple[float, ...] = ()  # none without two positive block medians: no spread to predict from
    if len(block_p50) >= 2 and min(block_p50) > 0 and p50 > 0:
        lo, hi = repeat_interval(np.asarray(block_p50), p50, run_noise)
        pi = (min(lo, ci[0]), max(hi, ci[1]))
    return LatencyStats(p50, p90, p99, float(samples_ms.mean()), ci, len(samples_ms),
                        batch_size * 1000.0 / p50 if p50 > 0 else float("inf"), block_p50, pi)


def measure_interleaved(open_by_variant: Mapping[str, OpenFn], batch_size: int, *, warmup: int, runs: int,
                        rounds: int, on_block: Callable[[], None] | None = None,
                        run_noise: float = 0.0) -> dict[str, LatencyStats]:
    """Time every variant in `rounds` blocks each, cycling variants, and pool the samples per variant.

    Each block opens its own session and closes it afterwards: idle ONNX Runtime sessions keep their
    intra-op threads spinning, and on a 2-core box that slowed whichever session ran next by up to 50 %.
    """
    samples = interleaved_blocks(open_by_variant, warmup=warmup, runs=runs, rounds=rounds, on_block=on_block)
    return {name: summarize(np.concatenate(s), batch_size, blocks=s, run_noise=run_noise)
            for name, s in samples.items()}


def paired_ratio_stats(cand: dict, base: dict, *, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float, float] | None:
    """Candidate / baseline p50 with a CI from the per-round ratios, when the report has `block_p50`.

    Round i times the baseline's block and the candidate's block back to back, so the ratio of their medians
    cancels load that lasts longer than a block; the bootstrap over rounds gives the interval. None when the
    report has no per-block medians (older reports): the caller falls back to `ratio_stats`."""
    import numpy as np

    cb, bb = cand.get("block_p50"), base.get("block_p50")
    if not (isinstance(cb, list) and isinstance(bb, list) and len(cb) == len(bb) >= 3):
        return None
    r = np.asarray(cb, dtype=float) / np.asarray(bb, dtype=float)
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        return None
    rng = np.random.default_rng(seed)
    medians = np.median(r[rng.integers(0, len(r), size=(resamples, len(r)))], axis=1)
    point = float(cand["p50"]) / float(base["p50"])
    lo, hi = (float(x) for x in np.percentile(medians, [2.5, 97.5]))
    return point, min(lo, point), max(hi, point)
