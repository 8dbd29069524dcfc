"""Drift magnitude, drift time and alignment on hand-computed trajectories."""

import math

import numpy as np
import pytest

from valuedrift.metrics.drift import drift_magnitude, drift_time, jsd_alignment, paired_drift_ci, w1_alignment


def test_drift_magnitude_is_signed_difference():
    m = drift_magnitude({"support": 0.5, "neutral": 0.3, "oppose": 0.2}, {"support": 0.2, "neutral": 0.5, "oppose": 0.3})
    assert m == pytest.approx({"support": -0.3, "neutral": 0.2, "oppose": 0.1})


def test_drift_time_hand_computed():
    # steps 0..40, value jumps early then plateaus; extreme e = step 40 (0.62), CI [0.55, 0.70]
    steps = [0, 10, 20, 30, 40]
    vals = [0.20, 0.40, 0.58, 0.60, 0.62]
    lo = [0.15, 0.35, 0.53, 0.55, 0.55]
    hi = [0.25, 0.45, 0.63, 0.65, 0.70]
    # first checkpoint inside [0.55, 0.70] is step 20 -> (20-0)/(40-0) = 0.5
    assert drift_time(steps, vals, lo, hi) == pytest.approx(0.5)


def test_drift_time_uses_largest_absolute_deviation_and_first_tie():
    steps = [100, 110, 120, 130]
    vals = [0.5, 0.25, 0.75, 0.5]  # |dev| 0.25 at 110 and 120 (exact in binary) -> e = 110, CI [0.2, 0.3]
    lo = [0.45, 0.2, 0.7, 0.45]
    hi = [0.55, 0.3, 0.8, 0.55]
    assert drift_time(steps, vals, lo, hi) == pytest.approx((110 - 100) / (130 - 100))


def test_drift_time_no_distinguishable_drift_is_zero():
    assert drift_time([0, 5, 10], [0.3, 0.31, 0.305], [0.2, 0.2, 0.2], [0.4, 0.4, 0.4]) == 0.0


def test_drift_time_rejects_bad_input():
    with pytest.raises(ValueError):
        drift_time([0, 0], [0.1, 0.2], [0, 0], [1, 1])
    with pytest.raises(ValueError):
        drift_time([0, 1], [0.1], [0], [1])


def test_paired_drift_ci_brackets_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    q0 = rng.dirichlet([1, 1, 1], size=40)
    q1 = np.clip(q0 + np.array([0.1, -0.05, -0.05]), 0, 1)
    m, lo, hi = paired_drift_ci(q0, q1, n_boot=500, seed=3)
    assert np.all(lo <= m) and np.all(m <= hi)
    m2, lo2, hi2 = paired_drift_ci(q0, q1, n_boot=500, seed=3)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    assert m[0] == pytest.approx((q1 - q0)[:, 0].mean())


def test_alignment_metrics_hand_computed():
    v = {"support": 1.0, "neutral": 0.0, "oppose": 0.0}
    r = {"support": 0.0, "neutral": 0.0, "oppose": 1.0}
    assert jsd_alignment(v, v) == pytest.approx(1.0)
    assert jsd_alignment(v, r) == pytest.approx(0.0)  # disjoint supports: JSD = 1 bit
    assert w1_alignment(v, r) == pytest.approx(0.0)  # all mass moved 2 steps: W1/(N-1) = 1
    half = {"support": 0.0, "neutral": 1.0, "oppose": 0.0}
    assert w1_alignment(v, half) == pytest.approx(0.5)
    # JSD of (1,0,0) vs (0.5,0.5,0): m = (.75,.25,0); 0.5*[log2(1/.75)] + 0.5*[.5 log2(.5/.75) + .5 log2(.5/.25)]
    p = {"support": 1.0, "neutral": 0.0, "oppose": 0.0}
    q = {"support": 0.5, "neutral": 0.5, "oppose": 0.0}
    jsd = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert jsd_alignment(p, q) == pytest.approx(1 - jsd)
