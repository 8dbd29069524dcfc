"""Per-run drift maths over a phase's checkpoint records and evaluation tables (pure: no file access).

Definitions of the quantities (value vector v_t, drift magnitude M_s, drift time, the across-seed
interval) live in docs/definitions.md; the formulas are restated in each function's docstring.

A phase is one traced run: ``sft/<corpus>`` (base → end of SFT) or ``po/<algorithm>-<set>`` (SFT → end
of the run). Its checkpoint records (``trajectory.json``) carry the trace vectors at every step; the
records flagged ``phase`` also have a per-probe evaluation table on the phase probe set.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from valuedrift.core.vocab import ALL, STANCES
from valuedrift.metrics.drift import across_seeds, drift_time, paired_drift_ci

PROBE_KEYS = ["probe_id", "topic", "split"]


def phase_ends(checkpoints: list[dict[str, Any]]) -> tuple[int, int] | None:
    """Steps (t0, t1) of the first and last phase-set evaluations, or None with fewer than two."""
    phase_ckpts = [c for c in checkpoints if c["phase"]]
    if len(phase_ckpts) < 2:
        return None
    return phase_ckpts[0]["step"], phase_ckpts[-1]["step"]


def magnitude_rows(a: pd.DataFrame, b: pd.DataFrame, t0: int, t1: int, n_boot: int, ci: float, seed: int) -> list[dict[str, Any]]:
    """Paired drift per (split, topic, stance) between the per-probe tables ``a`` (step t0) and ``b`` (t1).

    M_s = v_t1[s] − v_t0[s] over the probes scored at both ends, with the paired bootstrap CI over probes
    (:func:`valuedrift.metrics.drift.paired_drift_ci`, seed ``seed + k`` for the k-th group). Groups: every
    (split, topic), (split, "all"), and split "all" pooling the splits.
    """
    merged = a.merge(b, on=PROBE_KEYS, suffixes=("_0", "_1"))
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


def drift_metrics(checkpoints: list[dict[str, Any]], start: pd.DataFrame, end: pd.DataFrame, n_boot: int, ci: float,
                  seed: int) -> dict[str, float]:
    """A run's own drift as flat metrics, on all topics: ``drift/<split>/<stance>/magnitude`` with
    ``_lo``/``_hi`` (:func:`magnitude_rows` between the per-probe tables of its phase ends ``start`` and
    ``end``) and ``drift/<split>/<stance>/time`` (:func:`time_rows` over ``checkpoints``)."""
    ends = phase_ends(checkpoints)
    if ends is None:
        return {}
    out: dict[str, float] = {}
    for r in magnitude_rows(start, end, *ends, n_boot, ci, seed):
        if r["topic"] == ALL:
            key = f"drift/{r['split']}/{r['stance']}/magnitude"
            out.update({key: r["magnitude"], f"{key}_lo": r["magnitude_lo"], f"{key}_hi": r["magnitude_hi"]})
    for r in time_rows(checkpoints):
        if r["topic"] == ALL:
            out[f"drift/{r['split']}/{r['stance']}/time"] = float(r["drift_time"])
    return out


def contrast_rows(a_name: str, a: pd.DataFrame, b_name: str, b: pd.DataFrame, n_boot: int, ci: float, seed: int) -> list[dict[str, Any]]:
    """Difference of two checkpoints' profiles on the same probes, D_s = v_b[s] − v_a[s] (e.g. the final
    models of two SFT corpora), per (split, topic, stance) with the paired bootstrap CI over probes of
    :func:`magnitude_rows`."""
    return [{"a": a_name, "b": b_name, "split": r["split"], "topic": r["topic"], "stance": r["stance"],
             "n_probes": r["n_probes"], "v_a": r["v0"], "v_b": r["v1"], "difference": r["magnitude"],
             "ci_lo": r["magnitude_lo"], "ci_hi": r["magnitude_hi"]}
            for r in magnitude_rows(a, b, 0, 0, n_boot, ci, seed)]


def time_rows(checkpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drift time per (split, topic, stance) from the trace vectors at every checkpoint.

    drift_time: :func:`valuedrift.metrics.drift.drift_time` over the steps. ``time_resolved`` (0/1, so drift
    tables stay numeric) is 1 when v_t0 lies outside the CI of the extreme checkpoint e = argmax_t |v_t − v_t0|:
    the drift is visible on the trace probes; otherwise drift time is 0 by definition and says nothing about
    speed.
    """
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
            resolved = int(v[0] < lo[e] or v[0] > hi[e])
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


def run_table(magnitudes: list[dict[str, Any]], times: list[dict[str, Any]], phase: str, seed: int) -> pd.DataFrame:
    """One run's drift rows: phase, seed, split, topic, stance, the magnitude columns (if the run has two
    phase evaluations) and the drift-time columns."""
    mag, tim = pd.DataFrame(magnitudes), pd.DataFrame(times)
    table = mag.merge(tim, on=["split", "topic", "stance"], how="outer") if not mag.empty else tim
    table.insert(0, "seed", seed)
    table.insert(0, "phase", phase)
    return table


def mean_trajectory(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean over seeds of a phase's trajectory frames, per step."""
    return pd.concat(frames).groupby("step", as_index=False).mean()


def summarise(per_run: pd.DataFrame, ci: float) -> pd.DataFrame:
    """Aggregate per-seed rows to one row per (phase, split, topic, stance).

    magnitude = mean over seeds; with ≥ 2 seeds its CI is the across-seed t-interval
    (:func:`valuedrift.metrics.drift.across_seeds`), with 1 seed it is that seed's paired bootstrap CI over
    probes (``ci_kind`` says which). drift_time = mean over seeds with its t-interval;
    time_resolved_share = share of seeds whose drift time is resolved.
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
