"""The report's figures and their plot data: stance trajectories (drift stage), drift-magnitude bars, per-topic
trajectories and the capability probe (report stage). Matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.core.vocab import ALL, STANCES
from valuedrift.reporting.findings import PhaseInfo

COLORS = {"support": "tab:green", "neutral": "tab:gray", "oppose": "tab:red"}


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating the folder) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def panel_grid(plt: Any, n: int, width: float, height: float, cols: int = 4, **kw: Any) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, ``cols`` per row (unused cells hidden): (figure, panels in reading order)."""
    n = max(n, 1)
    cols = min(n, cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kw)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_trajectories(frames: dict[str, pd.DataFrame], path: Path, title: str = "likelihood route") -> None:
    """Per phase: the trace vectors of topic "all" vs step (dev solid, test dashed) with their CIs, four
    phases per row."""
    plt = pyplot()
    fig, flat = panel_grid(plt, len(frames), 4.6, 3.4)
    for ax, (phase, df) in zip(flat, frames.items(), strict=False):
        for split, style in (("dev", "-"), ("test", "--")):
            for s in STANCES:
                col = f"{split}_{s}"
                if col not in df:
                    continue
                ax.plot(df.step, df[col], style, color=COLORS[s], label=f"{s} ({split})", marker="o", ms=3)
                ax.fill_between(df.step, df[f"{col}_lo"], df[f"{col}_hi"], color=COLORS[s], alpha=0.12)
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("mean stance probability")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Stance trajectories, {title} (trace probes; solid = dev topics, dashed = held-out test topics; 95% CI)")
    save(fig, path)


def bars_frame(summary: pd.DataFrame, infos: list[PhaseInfo]) -> pd.DataFrame:
    recs = []
    for info in infos:
        r = summary[(summary.phase == info.phase) & (summary.split == ALL) & (summary.topic == ALL)]
        for row in r.itertuples(index=False):
            recs.append({"run": info.label, "stance": row.stance, "magnitude": row.magnitude,
                         "ci_lo": row.ci_lo, "ci_hi": row.ci_hi, "seeds": row.n_seeds})
    return pd.DataFrame(recs)


def plot_bars(bars: pd.DataFrame, path: Path, route: str = "likelihood route") -> None:
    plt = pyplot()
    runs = list(dict.fromkeys(bars.run))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(runs)), 4))
    width = 0.27
    for j, s in enumerate(STANCES):
        b = bars[bars.stance == s].set_index("run").reindex(runs)
        x = [i + (j - 1) * width for i in range(len(runs))]
        ax.bar(x, b.magnitude, width, color=COLORS[s], label=s,
               yerr=[b.magnitude - b.ci_lo, b.ci_hi - b.magnitude], capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([r.replace(" (", "\n(") for r in runs], fontsize=7)
    ax.set_ylabel("drift magnitude M_s (all probes)")
    seeds = int(bars.seeds.max()) if not bars.empty else 0
    ax.set_title(f"Drift magnitude per run, {route}, 95% CI ({seeds} seed{'s' if seeds != 1 else ''})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_topics(df: pd.DataFrame, title: str, path: Path) -> None:
    plt = pyplot()
    groups = [(s, t) for s, t in df[["split", "topic"]].drop_duplicates().itertuples(index=False) if s != ALL]
    n = len(groups)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, (split, topic) in zip(axes.flat, groups, strict=False):
        g = df[(df.split == split) & (df.topic == topic)].sort_values("step")
        for s in STANCES:
            ax.plot(g.step, g[s], color=COLORS[s], marker="o", ms=2, label=s)
            ax.fill_between(g.step, g[f"{s}_lo"], g[f"{s}_hi"], color=COLORS[s], alpha=0.15)
        ax.set_title(f"{topic} ({split})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_capability(cap: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for phase, g in cap.groupby("phase"):
        m = g.groupby("step").nll.mean()
        ax.plot(m.index, m.values, marker="o", ms=3, label=phase)
    ax.set_xlabel("training step (within the phase)")
    ax.set_ylabel("held-out NLL / token")
    ax.set_title("Capability probe: held-out general-instruction NLL")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
