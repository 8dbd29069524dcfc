"""Percentile bootstrap CIs of a mean (docs/definitions.md "Value vector"): over probes, and nested over
probes then samples for the paper route. Seeded, so every figure is reproducible."""

from __future__ import annotations

import numpy as np


def bootstrap_mean_ci(values: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the rows of ``values`` (n, k) and its percentile bootstrap CI (resampling rows)."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0)
    if len(values) < 2:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    boots = values[idx].mean(axis=1)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return mean, lo, hi


def nested_bootstrap_mean_ci(
    values: np.ndarray, n_boot: int, ci: float, seed: int, chunk: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over probes and samples of ``values`` (n_probes, K, k) with a two-stage percentile bootstrap CI:
    resample probes with replacement, then samples with replacement within each resampled probe."""
    values = np.asarray(values, dtype=np.float64)
    n, kk = values.shape[:2]
    mean = values.mean(axis=(0, 1))
    if n * kk < 2:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    boots = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        ip = rng.integers(0, n, size=(b, n))
        ik = rng.integers(0, kk, size=(b, n, kk))
        boots.append(values[ip[..., None], ik].mean(axis=(1, 2)))
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(np.concatenate(boots), [alpha, 1 - alpha], axis=0)
    return mean, lo, hi
