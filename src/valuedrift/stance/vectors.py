"""Value vectors and their bootstrap confidence intervals.

v_t(T) = (1/|T|) Σ_{p∈T} q_t(p)   for each topic T, and "all" = mean over every probe (per split).

The (1−α) CI of each component is the percentile interval of the mean over B seeded bootstrap
resamples of the probes in T.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.data.schemas import STANCES

ALL = "all"


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


def value_vectors(
    rows: Iterable[dict[str, Any]] | pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per-probe rows (probe_id, topic, split, support, neutral, oppose) -> one row per (split, topic).

    Columns: split, topic, n, and for each stance s: s, s_lo, s_hi. Topic "all" pools the split; split
    "all" pools the splits (so religion, which has questions in both, gets one overall vector too).
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    out = []
    by_split = [(split, sdf) for split, sdf in df.groupby("split", sort=True)] + [(ALL, df)]
    for split, sdf in by_split:
        groups = [(t, g) for t, g in sdf.groupby("topic", sort=True)] + [(ALL, sdf)]
        for k, (topic, g) in enumerate(groups):
            mean, lo, hi = bootstrap_mean_ci(g[list(STANCES)].to_numpy(), n_boot, ci, seed + k)
            rec: dict[str, Any] = {"split": split, "topic": topic, "n": len(g)}
            for j, s in enumerate(STANCES):
                rec[s], rec[f"{s}_lo"], rec[f"{s}_hi"] = float(mean[j]), float(lo[j]), float(hi[j])
            out.append(rec)
    return pd.DataFrame(out)


def metric_dict(vectors: pd.DataFrame) -> dict[str, float]:
    """MLflow metric names (DESIGN.md): ``stance/<topic>/<s>`` and ``stance/all/<s>`` over every scored
    probe, and ``stance/<split>/<topic>/<s>`` per split (dev = training topics, test = held out).
    """
    metrics = {}
    for r in vectors.itertuples(index=False):
        prefix = "stance" if r.split == ALL else f"stance/{r.split}"
        for s in STANCES:
            metrics[f"{prefix}/{r.topic}/{s}"] = float(getattr(r, s))
    return metrics
