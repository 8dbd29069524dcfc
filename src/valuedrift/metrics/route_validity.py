"""Route validity: does the likelihood route measure what the model says? (docs/definitions.md "Route validity")

Two readouts of the same checkpoint c and probe p:

- likelihood route: q_L(c, p) = softmax(ℓ(c, p) / τ + b), ℓ_s = mean token log-prob of stance statement s
  (b = 0, τ = 1 unless fitted, :func:`fit_temperature`);
- judged route: q_J(c, p) = (1/K) Σ_k y_k, with y_k the label of sampled answer k — one-hot for hand labels,
  p_J(·|p, y_k) for a judge.

Agreement is measured per probe, per topic profile, and — what drift figures depend on — on the *change*
between two checkpoints a → c, per (topic, stance) cell and overall:

    Δ_R(s, G) = mean_{p ∈ G} [q_R(c, p)_s − q_R(a, p)_s]        R ∈ {L, J}, G = a topic or a split,

with percentile bootstrap CIs over probes (paired: a probe's two checkpoints are resampled together).
All functions are pure (DataFrames in, dicts and frames out); seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.core.vocab import STANCES
from valuedrift.metrics.agreement import percentile_interval
from valuedrift.metrics.bootstrap import bootstrap_mean_ci
from valuedrift.metrics.drift import jsd_alignment

KEYS = ["checkpoint", "probe_id", "topic", "split"]
LL = [f"ll_{s}" for s in STANCES]


def likelihood_q(lik: pd.DataFrame, tau: float = 1.0, offsets: Sequence[float] = (0.0, 0.0, 0.0)) -> pd.DataFrame:
    """q_L = softmax(ℓ / τ + b) per row of ``lik`` (columns KEYS + ll_<stance>)."""
    z = lik[LL].to_numpy(dtype=np.float64) / tau + np.asarray(offsets)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out = lik[KEYS].copy()
    out[list(STANCES)] = e / e.sum(axis=1, keepdims=True)
    return out.reset_index(drop=True)


def judged_q(answers: pd.DataFrame) -> pd.DataFrame:
    """q_J per (checkpoint, probe): the mean over its answers of the stance columns (one-hot or p_J)."""
    g = answers.groupby(KEYS, sort=True)
    out = g[list(STANCES)].mean().reset_index()
    out["n_answers"] = g.size().to_numpy()
    return out


def one_hot(labels: pd.DataFrame, column: str = "gold") -> pd.DataFrame:
    """Stance columns (1 for the label in ``column``, else 0) added to a copy of ``labels``."""
    out = labels.copy()
    for s in STANCES:
        out[s] = (out[column] == s).astype(float)
    return out


def paired(q_l: pd.DataFrame, q_j: pd.DataFrame) -> pd.DataFrame:
    """Join the routes on (checkpoint, probe): columns L_<stance>, J_<stance>."""
    a = q_l[KEYS + list(STANCES)].rename(columns={s: f"L_{s}" for s in STANCES})
    b = q_j[KEYS + list(STANCES)].rename(columns={s: f"J_{s}" for s in STANCES})
    return a.merge(b, on=KEYS, how="inner")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def probe_correlation(pairs: pd.DataFrame, n_boot: int, ci: float, seed: int) -> dict[str, float]:
    """Pearson r across probes of (support − oppose) between the routes, with a bootstrap CI over probes."""
    x = (pairs["L_support"] - pairs["L_oppose"]).to_numpy()
    y = (pairs["J_support"] - pairs["J_oppose"]).to_numpy()
    rng = np.random.default_rng(seed)
    boots = [_pearson(x[i], y[i]) for i in rng.integers(0, len(x), size=(n_boot, len(x)))] if len(x) > 2 else []
    return percentile_interval(_pearson(x, y), boots, ci) | {"n": len(x)}


def profile_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (checkpoint, split, topic): both routes' mean profile, 1 − JSD between them, argmax agreement."""
    rows = []
    for (ckpt, split, topic), g in pairs.groupby(["checkpoint", "split", "topic"], sort=True):
        lv = {s: float(g[f"L_{s}"].mean()) for s in STANCES}
        jv = {s: float(g[f"J_{s}"].mean()) for s in STANCES}
        rows.append({"checkpoint": ckpt, "split": split, "topic": topic, "n": len(g),
                     **{f"L_{s}": lv[s] for s in STANCES}, **{f"J_{s}": jv[s] for s in STANCES},
                     "jsd_alignment": jsd_alignment(lv, jv), "argmax_agree": max(lv, key=lv.get) == max(jv, key=jv.get)})
    return pd.DataFrame(rows)


def change_table(pairs: pd.DataFrame, start: str, end: str, by: str, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Δ_R(s, G) from checkpoint ``start`` to ``end`` for both routes, per group G of column ``by`` (topic
    or split), with paired bootstrap CIs over the probes present at both checkpoints."""
    cols = [f"{r}_{s}" for r in "LJ" for s in STANCES]
    a = pairs[pairs.checkpoint == start].set_index("probe_id")
    c = pairs[pairs.checkpoint == end].set_index("probe_id")
    common = a.index.intersection(c.index)
    diff = (c.loc[common, cols] - a.loc[common, cols]).assign(group=a.loc[common, by])
    rows = []
    for k, (group, g) in enumerate(diff.groupby("group", sort=True)):
        mean, lo, hi = bootstrap_mean_ci(g[cols].to_numpy(), n_boot, ci, seed + k)
        for j, s in enumerate(STANCES):
            li, ji = j, len(STANCES) + j
            rows.append({"start": start, "end": end, by: group, "stance": s, "n": len(g),
                         "L": mean[li], "L_lo": lo[li], "L_hi": hi[li], "J": mean[ji], "J_lo": lo[ji], "J_hi": hi[ji]})
    return pd.DataFrame(rows)


def change_agreement(changes: pd.DataFrame) -> dict[str, Any]:
    """Summary of a :func:`change_table`: share of cells where the routes' Δ have the same sign; among the
    cells where the judged Δ's CI excludes 0, the share where the likelihood Δ has that sign *and* its CI
    excludes 0 (the route "sees" the change); Pearson r of Δ_L and Δ_J across cells; mean |Δ| per route."""
    if changes.empty:
        return {"cells": 0}
    sig_j = (changes.J_lo > 0) | (changes.J_hi < 0)
    seen = sig_j & (np.sign(changes.L) == np.sign(changes.J)) & ((changes.L_lo > 0) | (changes.L_hi < 0))
    return {
        "cells": len(changes),
        "sign_agreement": float((np.sign(changes.L) == np.sign(changes.J)).mean()),
        "judged_significant": int(sig_j.sum()),
        "likelihood_sees": float(seen.sum() / sig_j.sum()) if sig_j.any() else float("nan"),
        "pearson": _pearson(changes.L.to_numpy(), changes.J.to_numpy()),
        "mean_abs_L": float(changes.L.abs().mean()),
        "mean_abs_J": float(changes.J.abs().mean()),
    }


def cross_entropy(lik: pd.DataFrame, q_j: pd.DataFrame, tau: float, offsets: Sequence[float]) -> float:
    """Mean over probes of H(q_J, q_L) = −Σ_s q_J,s log q_L,s (the fit objective of :func:`fit_temperature`)."""
    pairs = paired(likelihood_q(lik, tau, offsets), q_j)
    q_l = np.clip(pairs[[f"L_{s}" for s in STANCES]].to_numpy(), 1e-12, None)
    return float(-(pairs[[f"J_{s}" for s in STANCES]].to_numpy() * np.log(q_l)).sum(axis=1).mean())


def mean_alignment(lik: pd.DataFrame, q_j: pd.DataFrame, tau: float, offsets: Sequence[float]) -> float:
    """Mean over probes of 1 − JSD(q_L(p), q_J(p)) (base 2): per-probe agreement of the two routes."""
    pairs = paired(likelihood_q(lik, tau, offsets), q_j)
    return float(np.mean([jsd_alignment({s: r[f"L_{s}"] for s in STANCES}, {s: r[f"J_{s}"] for s in STANCES})
                          for _, r in pairs.iterrows()])) if len(pairs) else float("nan")


def fit_temperature(lik: pd.DataFrame, q_j: pd.DataFrame, offsets: bool = False,
                    tau_bounds: tuple[float, float] = (0.05, 100.0)) -> dict[str, Any]:
    """τ (and, with ``offsets``, b_neutral and b_oppose; b_support = 0 fixes the gauge) minimising the mean
    cross-entropy H(q_J, softmax(ℓ/τ + b)) over the given probes, τ within ``tau_bounds`` (at the upper
    bound q_L is nearly uniform, or with offsets nearly the constant softmax(b): ℓ carries no information
    the fit can use), b within [−5, 5]. A log-τ grid gives the start, L-BFGS-B (scipy) refines it."""
    from scipy.optimize import minimize

    lo, hi = np.log(tau_bounds[0]), np.log(tau_bounds[1])

    def loss(x: np.ndarray) -> float:
        b = (0.0, x[1], x[2]) if offsets else (0.0, 0.0, 0.0)
        return cross_entropy(lik, q_j, float(np.exp(x[0])), b)

    grid = np.linspace(lo, hi, 41)
    start = grid[int(np.argmin([loss(np.array([g, 0.0, 0.0])) for g in grid]))]
    x0 = np.array([start, 0.0, 0.0]) if offsets else np.array([start])
    bounds = [(lo, hi)] + ([(-5.0, 5.0)] * 2 if offsets else [])
    res = minimize(lambda x: loss(np.concatenate([x, np.zeros(3 - len(x))])), x0, method="L-BFGS-B", bounds=bounds)
    x = np.concatenate([res.x, np.zeros(3 - len(res.x))])
    tau = float(np.exp(x[0]))
    return {"tau": tau, "offsets": [0.0, float(x[1]), float(x[2])] if offsets else [0.0, 0.0, 0.0],
            "cross_entropy": float(res.fun), "at_upper_bound": bool(tau >= tau_bounds[1] * 0.999)}
