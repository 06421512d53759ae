"""bench.accuracy's paired accuracy-drop interval, on simulated predictions with a known true drop."""
from __future__ import annotations

import numpy as np
import pytest

from bench.accuracy import discordant_counts, paired_drop_interval


def _logits(pred: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[pred]


def test_discordant_counts_count_rows_only_one_model_gets_right():
    labels = np.array([0, 1, 1, 0, 1])
    base = _logits(np.array([0, 1, 0, 1, 1]))   # right on 0, 1, 4
    cand = _logits(np.array([0, 0, 1, 1, 0]))   # right on 0, 2
    assert discordant_counts(labels, base, cand) == {"baseline_only": 2, "variant_only": 1, "rows": 5}
    assert discordant_counts(labels, base, base) == {"baseline_only": 0, "variant_only": 0, "rows": 5}


def test_interval_is_centred_on_the_drop_and_zero_wide_without_disagreement():
    lo, hi = paired_drop_interval(58, 34, 1000)  # 2.4 pt drop, the MiniLM student of the README
    assert lo < 2.4 < hi and (lo + hi) / 2 == pytest.approx(2.4, abs=0.01)
    assert paired_drop_interval(0, 0, 1000) == (0.0, 0.0)
    with pytest.raises(ValueError):
        paired_drop_interval(0, 0, 0)


def test_interval_holds_the_true_drop_about_95_percent_of_the_time():
    """3,000 simulated test sets of 1,000 rows: a baseline right 85 % of the time and a student that agrees with
    it on 91 % of rows, 2 points worse on average (the MiniLM case). Nominal 95 %."""
    rng = np.random.default_rng(0)
    n, sets = 1000, 3000
    # per row: both right, baseline only, student only, both wrong
    p = np.array([0.80, 0.055, 0.035, 0.11])
    true_drop = 100 * (p[1] - p[2])
    counts = rng.multinomial(n, p, size=sets)
    hits = sum(lo <= true_drop <= hi for lo, hi in (paired_drop_interval(int(c[1]), int(c[2]), n) for c in counts))
    assert 0.93 <= hits / sets <= 0.97, hits / sets  # binomial sd of a 95 % rate over 3,000 sets: 0.4 points


def test_pairing_narrows_the_interval_when_the_models_mostly_agree():
    """Treating the two accuracies as independent samples would give a much wider interval."""
    b, c, n = 55, 35, 1000
    lo, hi = paired_drop_interval(b, c, n)
    acc_base, acc_cand = (800 + b) / n, (800 + c) / n
    unpaired_half = 100 * 1.96 * np.sqrt(acc_base * (1 - acc_base) / n + acc_cand * (1 - acc_cand) / n)
    assert (hi - lo) / 2 < 0.6 * unpaired_half
