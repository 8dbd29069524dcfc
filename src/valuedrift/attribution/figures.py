"""The attribution figures: mean influence by example label (a panel per split), the top-k bars, and the
counterfactual retraining's drift per variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.attribution.counterfactual import FULL, RANDOM_MEAN, TOP
from valuedrift.attribution.tables import by_label
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.reporting.figures import COLORS, panel_grid, pyplot, save


def _label_order(labels: list[Any]) -> list[Any]:
    stances = [s for s in STANCES if s in labels]
    return stances + sorted((x for x in labels if x not in STANCES), key=str)


def plot_by_label(frame: pd.DataFrame, splits: list[str], path: Path, title: str) -> Path:
    """Grouped bars: x = the example's label, one bar per readout stance s = mean influence(z, s, split), 95% CI."""
    plt = pyplot()
    fig, axes = panel_grid(plt, len(splits), 4.6, 3.6, cols=3, sharey=True)
    width = 0.8 / len(STANCES)
    for ax, split in zip(axes, splits, strict=True):
        table = by_label(frame, split)
        labels = _label_order(list(table.label.unique()))
        x = np.arange(len(labels))
        for k, s in enumerate(STANCES):
            t = table[table.stance == s].set_index("label").loc[labels]
            ax.bar(x + (k - 1) * width, t["mean"], width, color=COLORS[s], label=f"toward {s}",
                   yerr=[t["mean"] - t["lo"], t["hi"] - t["mean"]], capsize=2, error_kw={"lw": 0.8})
        counts = table.drop_duplicates("label").set_index("label").loc[labels, "n"]
        ax.set_xticks(x, [f"{lab}\n(n={n})" for lab, n in zip(labels, counts, strict=True)], fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"readout on {split} probes", fontsize=10)
        ax.set_xlabel("training example's label")
    axes[0].set_ylabel("mean influence on R_s (Δ q, first order)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def plot_top_k(frame: pd.DataFrame, k: int, path: Path, title: str, split: str = ALL) -> Path:
    """A panel per readout stance: the k examples pushing R_{s,split} up most and the k pushing it down most, each
    named by id, [label, topic] (a value-gap set's pairs share one label: the topic tells them apart)."""
    plt = pyplot()
    fig, axes = panel_grid(plt, len(STANCES), 5.2, 0.28 * 2 * k + 1.2, cols=3)
    for ax, s in zip(axes, STANCES, strict=True):
        col = f"influence_{split}_{s}"
        ranked = frame.sort_values(col, ascending=False)
        picked = pd.concat([ranked.head(k), ranked.tail(k)]).drop_duplicates("row")
        y = np.arange(len(picked))[::-1]
        ax.barh(y, picked[col], color=[COLORS.get(str(lab), "tab:blue") for lab in picked.label])
        topics = picked["topic"].fillna("").astype(str) if "topic" in picked else pd.Series([""] * len(picked))
        names = [f"{e} [{lab}{', ' + topic if topic else ''}]" + (f" ×{n}" if n > 1 else "")
                 for e, lab, topic, n in zip(picked.example_id, picked.label, topics, picked.copies, strict=True)]
        ax.set_yticks(y, names, fontsize=7)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(f"toward / away from {s} ({split} probes)", fontsize=10)
        ax.set_xlabel("influence on R_s")
    fig.suptitle(f"{title} — bar colour = the example's label (green support, grey neutral, red oppose, blue other: general rows, no-gap pairs)", fontsize=10)
    return save(fig, path)


def plot_counterfactual(table: pd.DataFrame, stance: str, path: Path, title: str) -> Path:
    """Rows = routes, panels = splits: the drift of ``stance`` after training on all the data (``full``), without
    the top-k examples (``top``), without k random ones (each draw, and their mean with the across-draw
    interval), 95% CIs."""
    plt = pyplot()
    drift = table[table.quantity == "drift"]
    routes = list(dict.fromkeys(drift.route))
    splits = list(dict.fromkeys(drift.split))
    fig, axes = plt.subplots(len(routes), len(splits), figsize=(4.2 * len(splits), 3.4 * len(routes)), squeeze=False, sharey="row")
    for i, route in enumerate(routes):
        for j, split in enumerate(splits):
            ax = axes[i][j]
            g = drift[(drift.route == route) & (drift.split == split)].set_index("variant")
            order = [FULL, TOP, *sorted(v for v in g.index if v.startswith("random_")), RANDOM_MEAN]
            order = [v for v in order if v in g.index]
            colors = ["tab:blue" if v == FULL else "tab:orange" if v == TOP else "silver" if v != RANDOM_MEAN else "tab:gray"
                      for v in order]
            t = g.loc[order]
            x = np.arange(len(order))
            ax.bar(x, t.value, color=colors, yerr=[t.value - t.lo, t.hi - t.value], capsize=3, error_kw={"lw": 0.8})
            ax.set_xticks(x, [v.replace("random_", "rand ").replace(" (mean)", "\nmean") for v in order], fontsize=8)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_title(f"{route} route, {split} probes", fontsize=10)
            if j == 0:
                ax.set_ylabel(f"drift of {stance} (Δ v, 95% CI)")
    fig.suptitle(title, fontsize=11)
    return save(fig, path)
