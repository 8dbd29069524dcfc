"""Drift and alignment metrics (pure functions, docs/definitions.md).

Stances are ordered oppose < neutral < support where order matters (W1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from valuedrift.core.vocab import STANCES

ORDINAL: tuple[str, ...] = ("oppose", "neutral", "support")


def drift_magnitude(v0: Mapping[str, float], v1: Mapping[str, float]) -> dict[str, float]:
    """Signed drift of each stance between checkpoints t0 < t1:  M_s = v_t1(T)_s − v_t0(T)_s."""
    return {s: float(v1[s] - v0[s]) for s in STANCES}


def paired_drift_ci(
    q0: np.ndarray, q1: np.ndarray, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drift magnitude with a paired bootstrap CI over probes.

    ``q0``, ``q1``: (n_probes, 3) stance distributions of the same probes at t0 and t1 (rows aligned).
    M = mean(q1 − q0); the CI is the percentile interval of M over B resamples of probes.
    """
    d = np.asarray(q1, dtype=np.float64) - np.asarray(q0, dtype=np.float64)
    mean = d.mean(axis=0)
    if len(d) < 2:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    a = (1 - ci) / 2
    lo, hi = np.quantile(boots, [a, 1 - a], axis=0)
    return mean, lo, hi


def drift_time(steps: Sequence[int], values: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> float:
    """Drift time of one stance over a phase with checkpoints t0 < … < tn.

    e = the checkpoint with the largest |v_t − v_t0| (the first, on ties);
    η = the first checkpoint whose v_t lies inside the CI [lo_e, hi_e] of v_e;
    drift time = (η − t0) / (tn − t0) ∈ [0, 1]. Smaller = earlier.

    If v_t0 itself lies inside the CI of v_e (no drift distinguishable from noise), η = t0 and the drift
    time is 0: read it together with the magnitude and its CI. A phase with one checkpoint has time 0.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if len(steps) != len(values) or len(steps) != len(lo) or len(steps) != len(hi):
        raise ValueError("steps, values, lo and hi must have the same length")
    if len(steps) == 0:
        raise ValueError("drift_time needs at least one checkpoint")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("checkpoint steps must be strictly increasing")
    if steps[-1] == steps[0]:
        return 0.0
    e = int(np.argmax(np.abs(values - values[0])))
    inside = np.nonzero((values >= lo[e]) & (values <= hi[e]))[0]
    eta = int(inside[0]) if len(inside) else e
    return float((steps[eta] - steps[0]) / (steps[-1] - steps[0]))


def _as_array(d: Mapping[str, float], order: Sequence[str]) -> np.ndarray:
    return np.array([d[s] for s in order], dtype=np.float64)


def jsd_alignment(v: Mapping[str, float], r: Mapping[str, float]) -> float:
    """1 − JSD(v, r), Jensen–Shannon divergence in bits (base 2), so the result lies in [0, 1]."""
    p, q = _as_array(v, STANCES), _as_array(r, STANCES)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return 1.0 - 0.5 * (kl(p, m) + kl(q, m))


def w1_alignment(v: Mapping[str, float], r: Mapping[str, float]) -> float:
    """1 − W1(v, r)/(N − 1) on the ordinal scale oppose < neutral < support (N = 3, unit spacing).

    W1 between distributions on ordered points with unit spacing = Σ_k |F_v(k) − F_r(k)| (CDF difference).
    """
    p, q = _as_array(v, ORDINAL), _as_array(r, ORDINAL)
    p, q = p / p.sum(), q / q.sum()
    w1 = float(np.abs(np.cumsum(p) - np.cumsum(q))[:-1].sum())
    return 1.0 - w1 / (len(ORDINAL) - 1)


def across_seeds(values: Sequence[float], ci: float = 0.95) -> tuple[float, float, float, int]:
    """Mean over seeds with a Student-t CI:  m̄ ± t_{(1+ci)/2, n−1} · s / √n  (s = sample sd, n seeds).

    Returns (mean, lo, hi, n); with one seed the interval is degenerate (lo = hi = mean) — callers then
    report that seed's bootstrap CI over probes instead, and say that n = 1.
    """
    from scipy import stats

    v = np.asarray([x for x in values if x == x], dtype=np.float64)  # drop NaN
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n == 1:
        return m, m, m, 1
    half = float(stats.t.ppf((1 + ci) / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return m, m - half, m + half, n
