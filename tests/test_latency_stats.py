"""bench.latency's intervals, on simulated timings with a known noise model (no benchmarks run)."""
from __future__ import annotations

import numpy as np

from bench.latency import repeat_interval, summarize, t975


def _run(rng: np.random.Generator, *, blocks: int = 8, per_block: int = 25, session_sd: float = 0.08,
         sample_sd: float = 0.05) -> list[np.ndarray]:
    """One bench: each block (its own session) has its own level; samples scatter around it (log-normal)."""
    levels = rng.normal(0.0, session_sd, size=blocks)
    return [np.exp(lvl + rng.normal(0.0, sample_sd, size=per_block)) for lvl in levels]


def test_t_quantiles_match_the_table_of_students_t():
    assert abs(t975(1) - 12.706) < 1e-3 and abs(t975(7) - 2.365) < 1e-3 and t975(500) == 1.96


def test_repeat_interval_holds_a_repeat_runs_median_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    pairs = 300
    in_pi = in_ci = 0
    for _ in range(pairs):
        a, b = _run(rng), _run(rng)
        sa, sb = summarize(np.concatenate(a), 1, blocks=a), summarize(np.concatenate(b), 1, blocks=b)
        in_pi += sa.p50_repeat_pi95[0] <= sb.p50 <= sa.p50_repeat_pi95[1]
        in_ci += sa.p50_ci95[0] <= sb.p50 <= sa.p50_ci95[1]
    # binomial sd of a 95 % rate over 300 pairs is 1.3 pt: 0.90-0.99 is a 4-sd band
    assert 0.90 <= in_pi / pairs <= 0.99, in_pi / pairs
    # the CI of the median is narrower by design and holds a repeat's median markedly less often
    assert in_ci / pairs < in_pi / pairs - 0.05, (in_ci, in_pi)


def test_repeat_interval_is_centred_on_the_log_scale_and_widens_with_spread():
    tight = repeat_interval(np.array([1.0, 1.01, 0.99, 1.0]), 1.0)
    loose = repeat_interval(np.array([1.0, 1.2, 0.8, 1.0]), 1.0)
    assert tight[0] < 1.0 < tight[1] and loose[0] < tight[0] and loose[1] > tight[1]
    assert abs(np.log(loose[1]) + np.log(loose[0])) < 1e-12  # symmetric in log


def test_report_fields_of_a_summary():
    rng = np.random.default_rng(1)
    blocks = _run(rng)
    d = summarize(np.concatenate(blocks), 4, blocks=blocks).to_dict()
    assert len(d["block_p50"]) == 8 and len(d["p50_repeat_pi95"]) == 2 and len(d["p50_ci95"]) == 2
    assert d["p50_repeat_pi95"][0] <= d["p50_ci95"][0] <= d["p50"] <= d["p50_ci95"][1] <= d["p50_repeat_pi95"][1]
    few = summarize(np.concatenate(blocks[:2]), 1, blocks=blocks[:2])  # < 3 blocks: the CI widened by sqrt(2)
    assert few.p50_repeat_pi95[0] < few.p50_ci95[0] and few.p50_repeat_pi95[1] > few.p50_ci95[1]
