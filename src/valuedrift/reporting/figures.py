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


def chains(runs: list[str], start_from: str) -> list[tuple[str, list[str]]]:
    """The base → SFT → preference-optimisation chains among ``runs`` (phase names): each SFT run, with the
    preference runs after the one they start from (``po.start_from``)."""
    sft = [r for r in runs if r.startswith("sft/")]
    po = [r for r in runs if r.startswith("po/")]
    out = [(r, [r, *(po if r == f"sft/{start_from}" else [])]) for r in sft]
    return out if out or not po else [("preference optimisation", po)]


def plot_delta_chains(delta: pd.DataFrame, path: Path, start_from: str, title: str, split: str = ALL) -> None:
    """Change since the base model, Δv (paired CI band), on each chain's step axis (``delta``:
    :func:`valuedrift.reporting.runs.delta_frame`): a row per chain, a panel per stance, a line per run; the
    dotted line marks the end of SFT, where preference optimisation starts."""
    plt = pyplot()
    d = delta[delta.split == split]
    rows = chains(sorted(d.run.unique()), start_from)
    fig, axes = plt.subplots(max(len(rows), 1), len(STANCES), figsize=(4.8 * len(STANCES), 3.4 * max(len(rows), 1)),
                             squeeze=False, sharey=True)
    cmap = pyplot().get_cmap("tab10")
    for (chain, runs), panels in zip(rows, axes, strict=False):
        sft_end = d[d.run == chain].chain_step.max() if chain.startswith("sft/") else None
        for ax, s in zip(panels, STANCES, strict=True):
            for k, run in enumerate(runs):
                g = d[(d.run == run) & (d.stance == s)].sort_values("chain_step")
                ax.plot(g.chain_step, g.dv, marker="o", ms=3, color=cmap(k % 10), lw=2 if run == chain else 1.2, label=run)
                ax.fill_between(g.chain_step, g.dv_lo, g.dv_hi, color=cmap(k % 10), alpha=0.13)
            ax.axhline(0, color="black", lw=0.7)
            if sft_end is not None and len(runs) > 1:
                ax.axvline(sft_end, color="gray", ls=":", lw=1)
            ax.set_title(f"{chain}: {s}", fontsize=10)
            ax.set_xlabel("training step (base → SFT → preference optimisation)")
            ax.set_ylabel(f"Δv {s} since the base model")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="best")
    seeds = int(d.n_seeds.max()) if not d.empty else 0
    kind = "across-seed t-interval" if seeds > 1 else "paired bootstrap over probes"
    fig.suptitle(f"Change in stance since the base model, {title} ({split} topics, trace probes; 95% CI: {kind}, "
                 f"{seeds} seed{'s' if seeds != 1 else ''})\npreference runs continue from the end of SFT; their band is "
                 "the change within the run", fontsize=10)
    save(fig, path)


def plot_topic_heatmap(summary: pd.DataFrame, toward: pd.DataFrame, path: Path, title: str) -> None:
    """Drift magnitude of each run's own stance (its majority stance, target, or largest drift) per topic:
    dev topics (in the training data) and held-out test topics side by side; cells annotated."""
    plt = pyplot()
    toward = toward.sort_values("phase", key=lambda p: p.str.startswith("po/"), kind="stable")  # SFT rows first
    runs = list(toward.phase)
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.2 + 0.45 * len(runs)), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], ("dev", "test"), strict=True):
        cells = summary[(summary.split == split) & (summary.topic != ALL)]
        topics = sorted(cells.topic.unique())
        grid = [[float(cells[(cells.phase == r.phase) & (cells.topic == t) & (cells.stance == r.stance)].magnitude.mean())
                 for t in topics] for r in toward.itertuples(index=False)]
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-0.6, vmax=0.6, aspect="auto")
        ax.set_xticks(range(len(topics)), topics, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(runs)), [f"{r.phase} ({r.stance})" for r in toward.itertuples(index=False)], fontsize=8)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:
                    ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=6, color="white" if abs(v) > 0.35 else "black")
        ax.set_title(f"{split} topics" + (" (held out)" if split == "test" else " (in the training data)"), fontsize=10)
        ax.set_xlabel("topic")
    fig.colorbar(im, ax=axes[0].tolist(), label="drift magnitude M_s", shrink=0.8)
    fig.suptitle(title, y=1.04)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


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
