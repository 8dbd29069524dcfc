"""The attribution's outputs as tables: one row per example, top-k lists, and the run summary.

Columns ``influence_<split>_<stance>`` hold influence(z, s, split) (:mod:`valuedrift.attribution.tracin`);
``all`` pools the splits as R_{s,all} does: influence(z, s, all) = Σ_split (|P_split| / |P|) influence(z, s, split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from valuedrift.attribution.runs import Examples
from valuedrift.attribution.tracin import Influence
from valuedrift.core.vocab import ALL, STANCES

TEXT_CHARS = 160  # of each example's (chosen) completion kept in the top-k lists


def column(split: str, stance: str) -> str:
    return f"influence_{split}_{stance}"


def readout_splits(inf: Influence) -> list[str]:
    """The splits of the readout, then ``all``."""
    return sorted({sp for sp, _ in inf.names}) + [ALL]


def influence_frame(inf: Influence, examples: Examples) -> pd.DataFrame:
    """One row per distinct example: its id, labels, ``copies`` and an influence column per (split, stance)."""
    meta = pd.DataFrame(examples.meta).drop(columns=["text"])
    meta.insert(2, "copies", examples.copies)
    cols = {column(sp, s): inf.values[:, j] for j, (sp, s) in enumerate(inf.names)}
    sizes = inf.readouts[0].sizes
    total = sum(sizes.values())
    for s in STANCES:
        cols[column(ALL, s)] = sum(sizes[sp] / total * cols[column(sp, s)] for sp in sizes)
    return pd.concat([meta, pd.DataFrame(cols)], axis=1)


def top_k(frame: pd.DataFrame, examples: Examples, k: int) -> dict[str, Any]:
    """``{split: {stance: {"toward": [...], "away": [...]}}}``: the k examples with the largest and the
    smallest influence on each readout, with their labels and the start of their (chosen) completion."""
    text = {m["row"]: m["text"][:TEXT_CHARS] for m in examples.meta}
    keep = [c for c in ("example_id", "row", "copies", "label", "topic", "style") if c in frame]
    out: dict[str, Any] = {}
    for col in [c for c in frame if c.startswith("influence_")]:
        _, split, stance = col.split("_", 2)
        ranked = frame.sort_values(col, ascending=False)

        def entries(df: pd.DataFrame, col: str = col) -> list[dict[str, Any]]:
            return [{**{c: _plain(r[c]) for c in keep}, "influence": float(r[col]), "text": text[r["row"]]} for _, r in df.iterrows()]

        out.setdefault(split, {})[stance] = {"toward": entries(ranked.head(k)), "away": entries(ranked.tail(k).iloc[::-1])}
    return out


def _plain(v: Any) -> Any:
    """numpy scalars and NaN as JSON-ready values."""
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and np.isnan(v) else v


def by_label(frame: pd.DataFrame, split: str = ALL) -> pd.DataFrame:
    """Mean influence on each stance's readout per example label, with a normal 95% CI (± 1.96 SE)."""
    rows = []
    for label, g in frame.groupby("label", dropna=False):
        for s in STANCES:
            x = g[column(split, s)].to_numpy()
            se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
            rows.append({"label": label, "stance": s, "n": len(x), "mean": float(x.mean()), "lo": float(x.mean() - 1.96 * se),
                         "hi": float(x.mean() + 1.96 * se)})
    return pd.DataFrame(rows)


def summary(inf: Influence, frame: pd.DataFrame, run: str, algorithm: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Run, settings, checkpoints with their weights η_c, and per readout: R at every checkpoint, the measured
    change R(θ_T) − R(θ_0) beside Σ_z influence (the first-order SGD prediction; see the module notes of
    :mod:`valuedrift.attribution.tracin` on why the scales differ under AdamW)."""
    first, last = inf.readouts[0], inf.readouts[-1]
    readouts = {}
    for j, (sp, s) in enumerate(inf.names):
        readouts[f"{sp}/{s}"] = {"values": [float(r.values[j]) for r in inf.readouts],
                                 "measured_change": float(last.values[j] - first.values[j]),
                                 "sum_of_influences": float(frame[column(sp, s)].sum())}
    total = sum(first.sizes.values())
    for s in STANCES:  # R_{s,all} = Σ_split (|P_split| / |P|) R_{s,split}
        parts = [(first.sizes[sp] / total, readouts[f"{sp}/{s}"]) for sp in first.sizes]
        values = [sum(w * r["values"][c] for w, r in parts) for c in range(len(inf.readouts))]
        readouts[f"{ALL}/{s}"] = {"values": values, "measured_change": values[-1] - values[0],
                                  "sum_of_influences": float(frame[column(ALL, s)].sum())}
    return {"run": run, "algorithm": algorithm, **settings, "n_params": inf.n_params, "n_examples": len(frame),
            "n_rows": int(frame["copies"].sum()), "probes": first.sizes,
            "checkpoints": [{"step": c.step, "path": str(c.path), "weight": c.weight} for c in inf.checkpoints],
            "readouts": readouts}
