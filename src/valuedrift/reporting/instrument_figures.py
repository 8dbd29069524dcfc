"""Figures of the ``instrument`` stage: route changes (likelihood Δ against judged Δ) and phase-end drift
per route. Matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from valuedrift.core.vocab import STANCES
from valuedrift.reporting.figures import COLORS, panel_grid, pyplot, save


def plot_route_changes(changes: pd.DataFrame, path: Path, readout: str = "hand", tau: str = "tau_1") -> Path:
    """Per checkpoint (a panel each): Δ from base per (topic, stance), likelihood route (y) against the
    hand-labelled answers (x), both with 95% CIs; the diagonal is perfect agreement."""
    plt = pyplot()
    df = changes[(changes.readout == readout) & (changes.tau == tau)] if not changes.empty else changes
    ends = sorted(df.end.unique()) if not df.empty else []
    fig, axes = plt.subplots(1, max(len(ends), 1), figsize=(4.2 * max(len(ends), 1), 4.0), squeeze=False)
    for ax, end in zip(axes[0], ends, strict=False):
        g = df[df.end == end]
        for s in STANCES:
            h = g[g.stance == s]
            ax.errorbar(h.J, h.L, xerr=[h.J - h.J_lo, h.J_hi - h.J], yerr=[h.L - h.L_lo, h.L_hi - h.L], fmt="o",
                        color=COLORS[s], ms=4, alpha=0.8, elinewidth=0.8, label=s)
        lim = max(0.05, float(pd.concat([g.J_hi.abs(), g.J_lo.abs(), g.L_hi.abs(), g.L_lo.abs()]).max()) * 1.1)
        ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.7, ls=":")
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"base → {end}")
        ax.set_xlabel("Δ share of answers with the stance (hand labels)")
        ax.set_ylabel("Δ likelihood-route probability")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Does the likelihood route see what the answers say? One point per (topic, stance); 95% CI")
    return save(fig, path)


def plot_phase_ends(drift: pd.DataFrame, path: Path) -> Path:
    """Per run: drift from its start to its final checkpoint per stance (all probes), judged route next to
    the likelihood route on the same probes, 95% CIs."""
    plt = pyplot()
    d = drift[drift.split == "all"]
    runs = sorted(d.run.unique(), key=lambda r: (not r.startswith("sft/"), r))  # SFT first: the order of training
    routes = sorted(d.route.unique(), key=lambda r: r != "likelihood")
    fig, panels = panel_grid(plt, len(runs), 3.6, 3.4, sharey=True)
    width = 0.8 / max(len(routes), 1)
    for ax, run in zip(panels, runs, strict=False):
        for i, route in enumerate(routes):
            g = d[(d.run == run) & (d.route == route)].set_index("stance").reindex(list(STANCES))
            xs = [j + (i - (len(routes) - 1) / 2) * width for j in range(len(STANCES))]
            ax.bar(xs, g.drift, width, yerr=[g.drift - g.lo, g.hi - g.drift], capsize=3,
                   color=[COLORS[s] for s in STANCES], alpha=0.45 if route == "likelihood" else 0.9,
                   hatch="//" if route == "likelihood" else None, edgecolor="black", lw=0.5)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(STANCES)), list(STANCES))
        ax.set_title(run, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in panels[::4]:
        ax.set_ylabel("drift (final − start), 95% CI")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="lightgray", edgecolor="black", hatch="//" if r == "likelihood" else None, label=r) for r in routes]
    panels[0].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("Phase-end drift: quick judged route (solid) vs likelihood route (hatched), same probes")
    return save(fig, path)
