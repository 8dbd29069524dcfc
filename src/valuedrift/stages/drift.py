"""``drift`` stage: drift magnitude and drift time per phase, split, topic and stance.

Phases: ``sft/<corpus>`` (base → end of SFT) and ``po/<algorithm>-<set>`` (SFT → end of the run). For
each phase:

- magnitude M_s = v_tn − v_t0 on the phase probe set (all annotated probes by default), with a paired
  bootstrap CI over probes (:func:`valuedrift.drift.paired_drift_ci`);
- drift time on the trace probe set, which is scored at every checkpoint (:func:`valuedrift.drift.drift_time`).

Runs repeated over seeds (``runs/<kind>/<name>/seed<k>/``) are aggregated: mean over seeds with an
across-seed t-interval (with one seed: the probe-bootstrap CI), and every figure carries its seed count.

Writes ``metrics/drift_table.csv`` (every run × split × topic × stance), ``metrics/drift_summary.csv``
(aggregated over seeds), ``metrics/drift.json`` (headline numbers for ``dvc metrics``),
``plots/trajectory/<phase>.csv`` (DVC plot data) and ``plots/trajectories.png``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.config.load import load_params
from valuedrift.core.io import iter_jsonl, write_json
from valuedrift.core.rundir import RunDir, discover
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.metrics.drift import across_seeds, drift_time, paired_drift_ci

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TracedRunDir:
    """One traced training run: phase ``<kind>/<name>`` (e.g. ``sft/neutral_heavy``, ``po/dpo-value_gap``)
    and its seed: ``runs/<kind>/<name>/`` holds the first of ``seeds``, ``runs/<kind>/<name>/seeds/<k>/``
    each further seed k (train.common.seed_run_name)."""

    phase: str
    seed: int
    path: Path


def discover_runs(runs: Path, default_seed: int = 0) -> list[TracedRunDir]:
    """Every run under ``runs`` that has a trajectory, sorted by phase then seed."""
    found = [TracedRunDir(phase, default_seed if seed is None else seed, run.path) for phase, seed, run in discover(runs)]
    return sorted(found, key=lambda r: (r.phase, r.seed))


def discover_phases(runs: Path) -> dict[str, Path]:
    """Phase name -> run directory of its first seed (for callers that want one run per phase)."""
    phases: dict[str, Path] = {}
    for r in discover_runs(runs):
        phases.setdefault(r.phase, r.path)
    return phases


def load_table(run_dir: Path, step: int) -> pd.DataFrame:
    return pd.DataFrame([obj for _, obj in iter_jsonl(RunDir(run_dir).eval_table(step))])


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
            v, lo, hi = g[s].to_numpy(), g[f"{s}_lo"].to_numpy(), g[f"{s}_hi"].to_numpy()
            t = drift_time(g.step.to_numpy(), v, lo, hi)
            e = int(abs(v - v[0]).argmax())
            # resolved: the start lies outside the extreme checkpoint's CI, so the drift is visible on the
            # trace probes; otherwise drift time is 0 by definition and says nothing about speed
            resolved = int(v[0] < lo[e] or v[0] > hi[e])  # 0/1, so drift tables stay numeric
            rows.append({"split": split, "topic": topic, "stance": s, "drift_time": t, "time_resolved": resolved,
                         "n_checkpoints": len(g)})
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


def summarise(per_run: pd.DataFrame, ci: float) -> pd.DataFrame:
    """Aggregate per-seed rows to one row per (phase, split, topic, stance).

    magnitude = mean over seeds; with ≥ 2 seeds its CI is the across-seed t-interval (drift.across_seeds),
    with 1 seed it is that seed's paired bootstrap CI over probes (``ci_kind`` says which).
    """
    out = []
    for key, g in per_run.groupby(["phase", "split", "topic", "stance"], sort=True):
        rec: dict[str, Any] = dict(zip(["phase", "split", "topic", "stance"], key, strict=True))
        n_seeds = g.seed.nunique()
        rec["n_seeds"] = n_seeds
        if "magnitude" in g and g.magnitude.notna().any():
            m, lo, hi, _ = across_seeds(g.magnitude.tolist(), ci)
            if n_seeds == 1:
                lo, hi = float(g.magnitude_lo.iloc[0]), float(g.magnitude_hi.iloc[0])
            rec.update(magnitude=m, ci_lo=lo, ci_hi=hi, ci_kind="seeds" if n_seeds > 1 else "probes",
                       v0=float(g.v0.mean()), v1=float(g.v1.mean()), n_probes=int(g.n_probes.iloc[0]))
        if "drift_time" in g:
            t, tlo, thi, _ = across_seeds(g.drift_time.tolist(), ci)
            rec.update(drift_time=t, drift_time_lo=tlo, drift_time_hi=thi,
                       time_resolved_share=float(g.time_resolved.astype(float).mean()))
        out.append(rec)
    return pd.DataFrame(out)


def headline(summary: pd.DataFrame) -> dict[str, Any]:
    """Small nested dict for ``dvc metrics show``: topic "all" per phase and split, with the seed count."""
    out: dict[str, Any] = {}
    for phase in sorted(summary.phase.unique()):
        ph = summary[(summary.phase == phase) & (summary.topic == ALL)]
        out[phase] = {"seeds": int(ph.n_seeds.max())}
        for split in ("dev", "test", ALL):
            rows = ph[ph.split == split]
            if rows.empty:
                continue
            out[phase][split] = {}
            for r in rows.itertuples(index=False):
                rec = {}
                if "magnitude" in rows and r.magnitude == r.magnitude:
                    rec.update(magnitude=round(r.magnitude, 4), ci_lo=round(r.ci_lo, 4), ci_hi=round(r.ci_hi, 4))
                if "drift_time" in rows:
                    rec["drift_time"] = round(float(r.drift_time), 4)
                out[phase][split][r.stance] = rec
    return out


def compute(runs: Path, n_boot: int, ci: float, seed: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-run drift rows (phase, seed, split, topic, stance, magnitude…, drift_time) and trajectory frames
    (per phase: mean over seeds of the trace vectors at each step)."""
    rows, frames = [], {}
    by_phase: dict[str, list[pd.DataFrame]] = {}
    for run in discover_runs(runs, seed):
        ckpts = RunDir(run.path).checkpoint_records()
        if not ckpts:
            continue
        mag = pd.DataFrame(magnitude_rows(run.path, ckpts, n_boot, ci, seed))
        tim = pd.DataFrame(time_rows(ckpts))
        keys = ["split", "topic", "stance"]
        table = mag.merge(tim, on=keys, how="outer") if not mag.empty else tim
        table.insert(0, "seed", run.seed)
        table.insert(0, "phase", run.phase)
        rows.append(table)
        by_phase.setdefault(run.phase, []).append(trajectory_frame(ckpts))
    for phase, fs in by_phase.items():
        frames[phase] = pd.concat(fs).groupby("step", as_index=False).mean()
    return (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()), frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift drift", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--plots", default="plots")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    per_run, frames = compute(Path(a.runs), params.eval.bootstrap, params.eval.ci, params.seeds[0])
    if per_run.empty:
        raise SystemExit(f"no trajectories found under {a.runs}/<kind>/<name>/[seeds/<k>/]trajectory.json; run sft/po first")
    summary = summarise(per_run, params.eval.ci)
    metrics, plots = Path(a.metrics), Path(a.plots)
    metrics.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(metrics / "drift_table.csv", index=False)
    summary.to_csv(metrics / "drift_summary.csv", index=False)
    write_json(metrics / "drift.json", headline(summary))
    for phase, df in frames.items():
        out = plots / "trajectory" / f"{phase.replace('/', '__')}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    plot_trajectories(frames, plots / "trajectories.png")
    log.info("drift: %d phases, %d runs; tables in %s", len(frames), per_run.groupby(["phase", "seed"]).ngroups, metrics)
