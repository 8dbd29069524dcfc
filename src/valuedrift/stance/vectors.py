"""Value vectors and their bootstrap confidence intervals.

v_t(T) = (1/|T|) Σ_{p∈T} q_t(p)   for each topic T, and "all" = mean over every probe (per split).

The (1−α) CI of each component is the percentile interval of the mean over B seeded bootstrap
resamples of the probes in T.

Paper route: rows are per *sample* (a ``sample`` column, K rows per probe, q(p) = mean_k p_J(·|p, y_k)).
Then the bootstrap is two-stage: each resample draws |T| probes with replacement and, within each drawn
probe, K of its samples with replacement, so the CI covers probe and sampling variance together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.core.vocab import STANCES
from valuedrift.metrics.bootstrap import bootstrap_mean_ci, nested_bootstrap_mean_ci

ALL = "all"


def samples_array(g: pd.DataFrame) -> np.ndarray:
    """Per-sample rows (probe_id, sample, stances) → array (n_probes, K, 3); every probe needs the same K."""
    counts = g.groupby("probe_id").size()
    if counts.nunique() != 1:
        raise ValueError(f"every probe needs the same number of samples, got {sorted(counts.unique())}")
    g = g.sort_values(["probe_id", "sample"])
    return g[list(STANCES)].to_numpy(dtype=np.float64).reshape(len(counts), int(counts.iloc[0]), len(STANCES))


def _group_ci(g: pd.DataFrame, n_boot: int, ci: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(mean, lo, hi, number of probes): nested bootstrap for per-sample rows, probe bootstrap otherwise."""
    if "sample" in g.columns:
        arr = samples_array(g)
        return (*nested_bootstrap_mean_ci(arr, n_boot, ci, seed), arr.shape[0])
    return (*bootstrap_mean_ci(g[list(STANCES)].to_numpy(), n_boot, ci, seed), len(g))


def value_vectors(
    rows: Iterable[dict[str, Any]] | pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per-probe rows (probe_id, topic, split, support, neutral, oppose) -> one row per (split, topic).

    Columns: split, topic, n (probes), and for each stance s: s, s_lo, s_hi. Rows with a ``sample`` column
    (paper route, K per probe) get the two-stage bootstrap. Topic "all" pools the split; split
    "all" pools the splits (so religion, which has questions in both, gets one overall vector too).
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    out = []
    by_split = [(split, sdf) for split, sdf in df.groupby("split", sort=True)] + [(ALL, df)]
    for split, sdf in by_split:
        groups = [(t, g) for t, g in sdf.groupby("topic", sort=True)] + [(ALL, sdf)]
        for k, (topic, g) in enumerate(groups):
            mean, lo, hi, n = _group_ci(g, n_boot, ci, seed + k)
            rec: dict[str, Any] = {"split": split, "topic": topic, "n": n}
            for j, s in enumerate(STANCES):
                rec[s], rec[f"{s}_lo"], rec[f"{s}_hi"] = float(mean[j]), float(lo[j]), float(hi[j])
            out.append(rec)
    return pd.DataFrame(out)


def profile_of(vectors: Iterable[dict[str, Any]], split: str = ALL, topic: str = ALL) -> dict[str, float]:
    """The value vector {stance: share} of (split, topic) among value-vector rows (a checkpoint record's
    ``trace`` or ``full`` list); KeyError if there is none."""
    for r in vectors:
        if r["split"] == split and r["topic"] == topic:
            return {s: float(r[s]) for s in STANCES}
    raise KeyError(f"no value vector for split {split!r}, topic {topic!r}")


def record_profile(record: dict[str, Any], split: str = ALL, topic: str = ALL) -> dict[str, float]:
    """The (split, topic) value vector of a tracer checkpoint record: from its phase-set vectors
    (``full``) when it has them, else its trace vectors."""
    return profile_of(record.get("full") or record["trace"], split, topic)


def metric_dict(vectors: pd.DataFrame) -> dict[str, float]:
    """MLflow metric names (docs/definitions.md): ``stance/<topic>/<s>`` and ``stance/all/<s>`` over every scored
    probe, and ``stance/<split>/<topic>/<s>`` per split (dev = training topics, test = held out).
    """
    metrics = {}
    for r in vectors.itertuples(index=False):
        prefix = "stance" if r.split == ALL else f"stance/{r.split}"
        for s in STANCES:
            metrics[f"{prefix}/{r.topic}/{s}"] = float(getattr(r, s))
    return metrics
