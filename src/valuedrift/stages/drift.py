"""``drift`` stage: drift magnitude and drift time per phase, split, topic and stance.

Phases: ``sft/<corpus>`` (base → end of SFT) and ``po/<algorithm>-<set>`` (SFT → end of the run). For
each phase:

- magnitude M_s = v_tn − v_t0 on the phase probe set (all annotated probes by default), with a paired
  bootstrap CI over probes (:func:`valuedrift.drift.paired_drift_ci`);
- drift time on the trace probe set, which is scored at every checkpoint (:func:`valuedrift.drift.drift_time`).

Writes ``metrics/drift.json`` (headline numbers for ``dvc metrics``), ``metrics/drift_table.csv`` (every
phase × split × topic × stance), ``plots/trajectory/<phase>.csv`` (DVC plot data) and
``plots/trajectories.png``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.config import STANCES, load_params
from valuedrift.data.schemas import iter_jsonl, write_json
from valuedrift.drift import drift_time, paired_drift_ci
from valuedrift.stance.vectors import ALL
from valuedrift.train.tracing import StanceTracer

log = logging.getLogger(__name__)


def discover_phases(runs: Path) -> dict[str, Path]:
    """Phase name -> run directory, for every run with a trajectory."""
    phases = {}
    for traj in sorted(runs.glob("*/*/trajectory.json")):
        run_dir = traj.parent
        phases[f"{run_dir.parent.name}/{run_dir.name}"] = run_dir
    return phases


def load_table(run_dir: Path, step: int) -> pd.DataFrame:
    return pd.DataFrame([obj for _, obj in iter_jsonl(run_dir / "evals" / f"step_{step:06d}.jsonl")])


def magnitude_rows(run_dir: Path, checkpoints: list[dict[str, Any]], n_boot: int, ci: float, seed: int) -> list[dict[str, Any]]:
    """Paired drift per (split, topic, stance) between the first and last phase-set evaluations."""
    phase_ckpts = [c for c in checkpoints if c["phase"]]
    if len(phase_ckpts) < 2:
        return []
    t0, t1 = phase_ckpts[0]["step"], phase_ckpts[-1]["step"]
    a, b = load_table(run_dir, t0), load_table(run_dir, t1)
    merged = a.merge(b, on=["probe_id", "topic", "split"], suffixes=("_0", "_1"))
    rows = []
    groups = []
    for split, sdf in [*merged.groupby("split"), (ALL, merged)]:
        groups += [(split, topic, g) for topic, g in sdf.groupby("topic")] + [(split, ALL, sdf)]
    for k, (split, topic, g) in enumerate(groups):
        q0 = g[[f"{s}_0" for s in STANCES]].to_numpy()
        q1 = g[[f"{s}_1" for s in STANCES]].to_numpy()
        m, lo, hi = paired_drift_ci(q0, q1, n_boot, ci, seed + k)
        for j, s in enumerate(STANCES):
            rows.append({"split": split, "topic": topic, "stance": s, "n_probes": len(g), "t0": t0, "t1": t1,
                         "v0": float(q0[:, j].mean()), "v1": float(q1[:, j].mean()),
                         "magnitude": float(m[j]), "magnitude_lo": float(lo[j]), "magnitude_hi": float(hi[j])})
    return rows


def time_rows(checkpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drift time per (split, topic, stance) from the trace vectors at every checkpoint."""
    frames = []
    for c in checkpoints:
        df = pd.DataFrame(c["trace"])
        df["step"] = c["step"]
        frames.append(df)
    traj = pd.concat(frames)
    rows = []
    for (split, topic), g in traj.groupby(["split", "topic"]):
        g = g.sort_values("step")
        for s in STANCES:
            t = drift_time(g.step.to_numpy(), g[s].to_numpy(), g[f"{s}_lo"].to_numpy(), g[f"{s}_hi"].to_numpy())
            rows.append({"split": split, "topic": topic, "stance": s, "drift_time": t, "n_checkpoints": len(g)})
    return rows


def trajectory_frame(checkpoints: list[dict[str, Any]]) -> pd.DataFrame:
    """Wide table: step, then <split>_<stance> (and _lo/_hi) for topic "all" of the trace set."""
    recs = []
    for c in checkpoints:
        rec: dict[str, Any] = {"step": c["step"]}
        for r in c["trace"]:
            if r["topic"] != ALL:
                continue
            for s in STANCES:
                rec[f"{r['split']}_{s}"] = r[s]
                rec[f"{r['split']}_{s}_lo"] = r[f"{s}_lo"]
                rec[f"{r['split']}_{s}_hi"] = r[f"{s}_hi"]
        recs.append(rec)
    return pd.DataFrame(recs)


def plot_trajectories(frames: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"support": "tab:green", "neutral": "tab:gray", "oppose": "tab:red"}
    n = max(len(frames), 1)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.6), squeeze=False)
    for ax, (phase, df) in zip(axes[0], frames.items(), strict=False):
        for split, style in (("dev", "-"), ("test", "--")):
            for s in STANCES:
                col = f"{split}_{s}"
                if col not in df:
                    continue
                ax.plot(df.step, df[col], style, color=colors[s], label=f"{s} ({split})", marker="o", ms=3)
                ax.fill_between(df.step, df[f"{col}_lo"], df[f"{col}_hi"], color=colors[s], alpha=0.12)
        ax.set_title(phase)
        ax.set_xlabel("training step")
        ax.set_ylabel("mean stance probability")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("Stance trajectories (trace probes; solid = dev topics, dashed = held-out test topics; 95% CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(mag: pd.DataFrame, tim: pd.DataFrame, seeds: int) -> dict[str, Any]:
    """Small nested dict for ``dvc metrics show``: topic "all" per phase and split."""
    out: dict[str, Any] = {"seeds": seeds}
    for phase in sorted(set(mag.phase) | set(tim.phase)):
        out[phase] = {}
        for split in ("dev", "test", ALL):
            m = mag[(mag.phase == phase) & (mag.split == split) & (mag.topic == ALL)]
            t = tim[(tim.phase == phase) & (tim.split == split) & (tim.topic == ALL)]
            if m.empty and t.empty:
                continue
            out[phase][split] = {}
            for s in STANCES:
                rec = {}
                ms = m[m.stance == s]
                if not ms.empty:
                    r = ms.iloc[0]
                    rec.update(magnitude=round(r.magnitude, 4), ci_lo=round(r.magnitude_lo, 4), ci_hi=round(r.magnitude_hi, 4))
                ts = t[t.stance == s]
                if not ts.empty:
                    rec["drift_time"] = round(float(ts.iloc[0].drift_time), 4)
                out[phase][split][s] = rec
    return out


def compute(runs: Path, n_boot: int, ci: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    mags, times, frames = [], [], {}
    for phase, run_dir in discover_phases(runs).items():
        ckpts = StanceTracer.load_trajectory(run_dir)["checkpoints"]
        if not ckpts:
            continue
        mags += [{"phase": phase, **r} for r in magnitude_rows(run_dir, ckpts, n_boot, ci, seed)]
        times += [{"phase": phase, **r} for r in time_rows(ckpts)]
        frames[phase] = trajectory_frame(ckpts)
    return pd.DataFrame(mags), pd.DataFrame(times), frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift drift", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--plots", default="plots")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    mag, tim, frames = compute(Path(a.runs), params.eval.bootstrap, params.eval.ci, params.seed)
    if mag.empty and tim.empty:
        raise SystemExit(f"no trajectories found under {a.runs}/*/*/trajectory.json; run the sft/po stages first")
    table = mag.merge(tim, on=["phase", "split", "topic", "stance"], how="outer") if not mag.empty else tim
    metrics, plots = Path(a.metrics), Path(a.plots)
    metrics.mkdir(parents=True, exist_ok=True)
    table.to_csv(metrics / "drift_table.csv", index=False)
    write_json(metrics / "drift.json", headline(mag if not mag.empty else pd.DataFrame(columns=["phase", "split", "topic", "stance"]), tim, seeds=1))
    for phase, df in frames.items():
        out = plots / "trajectory" / f"{phase.replace('/', '__')}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    plot_trajectories(frames, plots / "trajectories.png")
    log.info("drift: %d phases, table at %s", len(frames), metrics / "drift_table.csv")
    _ = np  # numpy used via pandas ops
