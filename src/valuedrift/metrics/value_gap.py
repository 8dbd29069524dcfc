"""Value-gap analysis of any preference set (docs/definitions.md "Value gap").

For pair i with stance distributions d_c(i), d_r(i) ∈ Δ(S) of its chosen and rejected answers, and a
topic T (its pairs i ∈ T; "all" = every pair):

    P_chosen(T) = (1/|T|) Σ_{i∈T} d_c(i),   P_rejected(T) = (1/|T|) Σ_{i∈T} d_r(i)
    gap(T)      = P_chosen(T) − P_rejected(T) ∈ [−1, 1]^|S|

d is one-hot from the generator's label for synthetic sets, and p_J(·|question, answer) from a judge for
real data (UltraFeedback, HH-RLHF). The (1−α) CI of gap(T) is the percentile interval of the mean of
the per-pair differences d_c(i) − d_r(i) over seeded bootstrap resamples of the pairs.

Outputs: a table (one row per topic and "all"; CSV and JSON) and a plot (PNG).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.core.io import write_json
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.metrics.bootstrap import bootstrap_mean_ci

SIDES = ("chosen", "rejected")

# (questions, answers) -> (n, |S|) stance distributions in STANCES order
JudgeFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def message_text(value: Any, role: str) -> str:
    """The text of the last ``role`` turn of a conversational field, or a plain string as is."""
    if isinstance(value, str):
        return value
    turns = [m["content"] for m in value if m.get("role") == role]
    if not turns:
        raise ValueError(f"no {role!r} turn in {value!r}")
    return turns[-1]


def one_hot(stance: str) -> list[float]:
    if stance not in STANCES:
        raise ValueError(f"unknown stance label {stance!r}; allowed: {', '.join(STANCES)}")
    return [float(s == stance) for s in STANCES]


def labelled(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether every pair carries the generator's stance labels (``chosen_stance`` and ``rejected_stance``)."""
    return all(r.get("chosen_stance") and r.get("rejected_stance") for r in rows)


def generator_labels(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per-pair distributions from the labels a synthetic generator wrote (``chosen_stance``, …)."""
    out = []
    for i, r in enumerate(rows):
        rec: dict[str, Any] = {"topic": r.get("topic") or ALL}
        for side in SIDES:
            label = r.get(f"{side}_stance")
            if label is None:
                raise ValueError(f"pair {i} has no {side}_stance label; analyse it with a judge instead")
            rec.update({f"{side}_{s}": p for s, p in zip(STANCES, one_hot(label), strict=True)})
        out.append(rec)
    return pd.DataFrame(out)


def judge_labels(rows: Sequence[dict[str, Any]], judge: JudgeFn) -> pd.DataFrame:
    """Per-pair distributions p_J(·|question, answer) for chosen and rejected (one judge call per side)."""
    questions = [message_text(r["prompt"], "user") for r in rows]
    out = pd.DataFrame({"topic": [r.get("topic") or ALL for r in rows]})
    for side in SIDES:
        answers = [message_text(r[side], "assistant") for r in rows]
        dist = np.asarray(judge(questions, answers), dtype=np.float64)
        if dist.shape != (len(rows), len(STANCES)):
            raise ValueError(f"judge returned shape {dist.shape}, expected {(len(rows), len(STANCES))}")
        for j, s in enumerate(STANCES):
            out[f"{side}_{s}"] = dist[:, j]
    return out


def gap_table(labels: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per-pair distributions -> one row per topic and "all" (last): n, chosen_s, rejected_s, gap_s,
    gap_s_lo, gap_s_hi for each stance s."""
    if labels.empty:
        raise ValueError("no pairs to analyse")
    groups = [(t, g) for t, g in labels.groupby("topic", sort=True) if t != ALL] + [(ALL, labels)]
    rows = []
    for k, (topic, g) in enumerate(groups):
        chosen = g[[f"chosen_{s}" for s in STANCES]].to_numpy()
        rejected = g[[f"rejected_{s}" for s in STANCES]].to_numpy()
        gap, lo, hi = bootstrap_mean_ci(chosen - rejected, n_boot, ci, seed + k)
        rec: dict[str, Any] = {"topic": topic, "n": len(g)}
        for j, s in enumerate(STANCES):
            rec[f"chosen_{s}"] = float(chosen[:, j].mean())
            rec[f"rejected_{s}"] = float(rejected[:, j].mean())
            rec[f"gap_{s}"], rec[f"gap_{s}_lo"], rec[f"gap_{s}_hi"] = float(gap[j]), float(lo[j]), float(hi[j])
        rows.append(rec)
    return pd.DataFrame(rows)


def overall(table: pd.DataFrame) -> dict[str, float]:
    """gap(all) per stance."""
    row = table[table.topic == ALL].iloc[0]
    return {s: float(row[f"gap_{s}"]) for s in STANCES}


def plot_gap(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Left: stance distributions of chosen (C) and rejected (R) per topic (stacked); right: the gap per
    stance with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"support": "#2a9d8f", "neutral": "#adb5bd", "oppose": "#e76f51"}
    topics = list(table.topic)
    y = np.arange(len(topics))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.6 * len(topics) + 1.8), sharey=True)
    for off, side in ((-0.2, "chosen"), (0.2, "rejected")):
        left = np.zeros(len(topics))
        for s in STANCES:
            vals = table[f"{side}_{s}"].to_numpy()
            ax1.barh(y + off, vals, height=0.38, left=left, color=colors[s], edgecolor="white",
                     label=s if side == "chosen" else None)
            left += vals
        for yy in y:
            ax1.text(1.01, yy + off, side[0].upper(), va="center", fontsize=7)
    ax1.set_xlim(0, 1.06)
    ax1.set_xlabel("stance distribution (C = chosen, R = rejected)")
    ax1.set_yticks(y, [f"{t} (n={n})" for t, n in zip(topics, table.n, strict=True)])
    ax1.invert_yaxis()
    width = 0.26
    for j, s in enumerate(STANCES):
        g = table[f"gap_{s}"].to_numpy()
        err = np.vstack([g - table[f"gap_{s}_lo"].to_numpy(), table[f"gap_{s}_hi"].to_numpy() - g])
        ax2.barh(y + (j - 1) * width, g, height=width, xerr=err, color=colors[s], capsize=2)
    ax2.axvline(0, color="black", linewidth=0.8)
    ax2.set_xlim(-1.05, 1.05)
    ax2.set_xlabel("value gap = P(chosen) − P(rejected)")
    fig.suptitle(title)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(STANCES), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_gap_analysis(table: pd.DataFrame, prefix: Path, title: str, meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<prefix>.gap.csv`` (the table), ``<prefix>.gap.json`` (meta, gap(all), the table) and
    ``<prefix>.gap.png``. Returns the paths."""
    prefix = Path(prefix)
    paths = {ext: prefix.with_name(f"{prefix.name}.gap.{ext}") for ext in ("csv", "json", "png")}
    paths["csv"].parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths["csv"], index=False, float_format="%.6g")
    write_json(paths["json"], {**(meta or {}), "gap": overall(table), "n_pairs": int(table[table.topic == ALL].n.iloc[0]),
                               "topics": table.to_dict(orient="records")})
    plot_gap(table, paths["png"], title)
    return paths
