"""Counterfactual retraining: does removing the examples attribution ranks highest shrink the drift more than
removing as many random ones? (docs/definitions.md "Counterfactual retraining")

**Target.** The readout (s*, split) = (``counterfactual.stance``, ``counterfactual.select_split``); with
``stance: auto``, s* = argmax_s |R_{s,split}(θ_T) − R_{s,split}(θ_0)|, the stance whose readout changed most
over the run (``summary.json`` of the attribution, ``measured_change``). σ = the sign of that change.

**Variants of the training data** (every copy of a removed example goes):

- ``top``: without the k distinct examples of largest σ · influence(z, s*, split) — those that pushed the
  readout furthest in the direction it drifted;
- ``random_<d>``, d = 0 … draws − 1: without k distinct examples drawn at random (generator seed ``seed + d``).
  With ``baseline: label_matched`` (the default) the draw holds as many examples of each label ℓ (stance,
  ``general``…) as the top-k set, n_ℓ(random_d) = n_ℓ(top), drawn uniformly among the examples labelled ℓ; so
  D below measures whether attribution picks *which* examples of a label matter, not only which labels.
  ``baseline: uniform`` draws the k uniformly from all examples.

Each variant is retrained with the run's own params (``valuedrift retrain``). **Comparison** on the
phase probes at the phase ends, on each split (``dev``, ``test``, ``all``):

    M_v = v_T^(v)[s*] − v_0[s*]                       (drift magnitude of variant v, paired bootstrap CI over probes)
    D   = v_T^(top)[s*] − mean_d v_T^(random_d)[s*]   (paired over probes: bootstrap CI)

for v = ``full`` (the attributed run itself), ``top`` and each ``random_<d>``; the random draws are also
pooled as the mean of their M with the across-draw t-interval (training noise: the draws differ in which
rows the sampler shows). Attribution is **useful** on a split when σ·D < 0 with its CI excluding 0 — the
top-k removal left less drift toward s* than random removal did — and the top-k drift lies below every
random draw's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.attribution.runs import RunInfo, example_key, resolve_run
from valuedrift.attribution.tables import column
from valuedrift.config.schema.attribution import CounterfactualConfig
from valuedrift.core.errors import ConfigError, check_defined
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.metrics.drift import across_seeds
from valuedrift.metrics.summary import PROBE_KEYS, magnitude_rows

TOP = "top"
FULL = "full"
RANDOM_MEAN = "random (mean)"


def random_variant(d: int) -> str:
    return f"random_{d}"


def variants(draws: int) -> list[str]:
    """The retrained variants: ``top`` and ``random_0`` … ``random_<draws − 1>``."""
    return [TOP, *(random_variant(d) for d in range(draws))]


def target(summary: dict[str, Any], cfg: CounterfactualConfig) -> tuple[str, int, float]:
    """(s*, σ, measured change) of the module docstring, from an attribution's ``summary.json``."""
    changes = {s: float(summary["readouts"][f"{cfg.select_split}/{s}"]["measured_change"]) for s in STANCES
               if f"{cfg.select_split}/{s}" in summary["readouts"]}
    if not changes:
        raise ConfigError("counterfactual.select_split", f"the attribution of {summary.get('run')} has no {cfg.select_split!r} readout")
    stance = max(changes, key=lambda s: abs(changes[s])) if cfg.stance == "auto" else cfg.stance
    change = changes[stance]
    return stance, 1 if change >= 0 else -1, change


def removal_sets(frame: pd.DataFrame, stance: str, split: str, sign: int, k: int, draws: int, seed: int,
                 baseline: str = "label_matched") -> dict[str, list[int]]:
    """Per variant, the ``row`` (first occurrence) of each of the k removed distinct examples of ``frame``
    (an attribution's ``influence.csv``); ``baseline`` as in the module docstring."""
    if k >= len(frame):
        raise ConfigError("counterfactual.k", f"must be below the run's {len(frame)} distinct training examples, got {k}")
    score = sign * frame[column(split, stance)].to_numpy()
    order = np.argsort(-score, kind="stable")
    rows = frame["row"].to_numpy()
    top = order[:k]
    out = {TOP: [int(r) for r in rows[top]]}
    labels = frame["label"].astype(str).to_numpy()
    for d in range(draws):
        rng = np.random.default_rng(seed + d)
        if baseline == "uniform":
            picked = rng.choice(len(frame), size=k, replace=False)
        else:
            wanted = pd.Series(labels[top]).value_counts().sort_index()
            picked = np.concatenate([rng.choice(np.flatnonzero(labels == label), size=int(n), replace=False)
                                     for label, n in wanted.items()])
        out[random_variant(d)] = sorted(int(r) for r in rows[picked])
    return out


def without(rows: Sequence[dict[str, Any]], kind: str, removed: Sequence[int]) -> list[dict[str, Any]]:
    """``rows`` minus every copy of the examples whose first occurrence is at the indices ``removed``."""
    keys = {example_key(rows[i], kind) for i in removed}
    return [r for r in rows if example_key(r, kind) not in keys]


def removed_labels(frame: pd.DataFrame, removed: Sequence[int]) -> dict[str, int]:
    """How many removed examples carry each label (stance, ``general``, ``no gap``…)."""
    picked = frame.set_index("row").loc[list(removed)]
    return {str(k): int(v) for k, v in picked["label"].value_counts().sort_index().items()}


def _mean_table(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per probe, the mean q over ``tables`` (on the probes every table holds)."""
    stacked = pd.concat(tables)
    counts = stacked.groupby(PROBE_KEYS).size()
    full = counts[counts == len(tables)].index
    mean = stacked.groupby(PROBE_KEYS)[list(STANCES)].mean()
    return mean.loc[full].reset_index()


def compare(start: pd.DataFrame, finals: dict[str, pd.DataFrame], stance: str, draws: int, n_boot: int, ci: float,
            seed: int) -> pd.DataFrame:
    """Rows (split, variant, magnitude, lo, hi, n, kind) of the module docstring: M_v for ``finals`` (variant ->
    its final per-probe table against the common ``start`` table), the random draws pooled, and D."""
    rows: list[dict[str, Any]] = []

    def magnitudes(variant: str, end: pd.DataFrame, kind: str) -> None:
        for r in magnitude_rows(start, end, 0, 1, n_boot, ci, seed):
            if r["topic"] == ALL and r["stance"] == stance:
                rows.append({"split": r["split"], "variant": variant, "quantity": "drift", "value": r["magnitude"],
                             "lo": r["magnitude_lo"], "hi": r["magnitude_hi"], "n": r["n_probes"], "ci_kind": kind})

    for variant, table in finals.items():
        magnitudes(variant, table, "probes")
    randoms = [random_variant(d) for d in range(draws) if random_variant(d) in finals]
    drift = pd.DataFrame(rows)
    for split, g in drift.groupby("split", sort=False):
        vals = g[g.variant.isin(randoms)].value.tolist()
        m, lo, hi, n = across_seeds(vals, ci)
        rows.append({"split": split, "variant": RANDOM_MEAN, "quantity": "drift", "value": m, "lo": lo, "hi": hi,
                     "n": n, "ci_kind": "draws"})
    if TOP in finals and randoms:
        for r in magnitude_rows(_mean_table([finals[v] for v in randoms]), finals[TOP], 0, 1, n_boot, ci, seed):
            if r["topic"] == ALL and r["stance"] == stance:
                rows.append({"split": r["split"], "variant": f"{TOP} − {RANDOM_MEAN}", "quantity": "difference",
                             "value": r["magnitude"], "lo": r["magnitude_lo"], "hi": r["magnitude_hi"],
                             "n": r["n_probes"], "ci_kind": "probes"})
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame, sign: int, draws: int) -> dict[str, dict[str, Any]]:
    """Per split: is σ·D < 0 with its CI excluding 0, and does the top-k drift lie below every random draw's
    (in the direction σ)? Both = ``useful``."""
    out = {}
    randoms = {random_variant(d) for d in range(draws)}
    for split, g in table.groupby("split", sort=False):
        by = g.set_index("variant")
        diff = by.loc[f"{TOP} − {RANDOM_MEAN}"] if f"{TOP} − {RANDOM_MEAN}" in by.index else None
        if diff is None or TOP not in by.index:
            continue
        shrinks = bool(sign * diff["hi"] < 0) if sign > 0 else bool(sign * diff["lo"] < 0)
        below = bool(all(sign * by.loc[TOP, "value"] < sign * by.loc[v, "value"] for v in randoms if v in by.index))
        out[str(split)] = {"difference": float(diff["value"]), "difference_lo": float(diff["lo"]), "difference_hi": float(diff["hi"]),
                           "ci_excludes_0": shrinks, "top_below_every_draw": below, "useful": shrinks and below}
    return out


def counterfactual_run(params: Any, runs: Path, processed: Path, base_model: Path, sft_runs: Path) -> RunInfo:
    """The :class:`RunInfo` of ``counterfactual.run`` (which must be an entry of ``attribute.runs``)."""
    from valuedrift.algorithms.registry import ALGORITHMS

    cfg = params.counterfactual
    check_defined(cfg.run, params.attribute.runs, "counterfactual.run", "attribute.runs (the attributed runs)")
    path = Path(runs) / cfg.run
    if not path.is_dir():
        raise ConfigError("counterfactual.run", f"{path}: no such run (run the main pipeline first: make run)")
    return resolve_run(path, processed, base_model, sft_runs, params.po.start_from, params.seeds[0], list(ALGORITHMS))
