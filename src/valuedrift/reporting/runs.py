"""The traced runs under ``runs/`` as the reports see them: one :class:`PhaseRun` per phase and seed, and
the drift rows, trajectories and capability series read from their folders (via
:mod:`valuedrift.core.rundir`; the maths is :mod:`valuedrift.metrics.summary`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from valuedrift.core.io import iter_jsonl
from valuedrift.core.rundir import RunDir, discover
from valuedrift.metrics.change import DELTA_COLUMNS, chain_offsets, continue_chains, delta_rows, over_seeds
from valuedrift.metrics.summary import (
    contrast_rows,
    magnitude_rows,
    mean_trajectory,
    phase_ends,
    run_table,
    time_rows,
    trajectory_frame,
)

CAPABILITY_METRIC = "capability/heldout_nll"


@dataclass(frozen=True)
class PhaseRun:
    """One traced training run: phase ``<kind>/<name>`` (e.g. ``sft/neutral_heavy``, ``po/dpo-value_gap``),
    its training seed and its folder (:func:`valuedrift.core.rundir.discover`: ``runs/<kind>/<name>/`` holds
    the first seed, ``runs/<kind>/<name>/seeds/<k>/`` each further seed k)."""

    phase: str
    seed: int
    run: RunDir

    @property
    def path(self) -> Path:
        return self.run.path


def discover_runs(runs: Path, default_seed: int = 0, route: str | None = None) -> list[PhaseRun]:
    """Every run under ``runs`` that has a trajectory, sorted by phase then seed (the first seed's folder
    carries no seed number: it gets ``default_seed``). ``route`` (e.g. ``judged``): the run's evaluation on
    that route instead (its folder ``<run>/<route>``; runs without one are left out)."""
    found = [PhaseRun(phase, default_seed if seed is None else seed, RunDir(run.path / route) if route else run)
             for phase, seed, run in discover(runs)]
    return sorted((r for r in found if r.run.trajectory_file.exists()), key=lambda r: (r.phase, r.seed))


def load_table(run: RunDir, step: int) -> pd.DataFrame:
    """The per-probe evaluation table of ``run`` at ``step``."""
    return pd.DataFrame([obj for _, obj in iter_jsonl(run.eval_table(step))])


def compute(runs: Path, n_boot: int, ci: float, seed: int, route: str | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-run drift rows (phase, seed, split, topic, stance, magnitude…, drift_time) and trajectory frames
    (per phase: mean over seeds of the trace vectors at each step), on the likelihood route or ``route``."""
    rows = []
    by_phase: dict[str, list[pd.DataFrame]] = {}
    for r in discover_runs(runs, seed, route):
        ckpts = r.run.checkpoint_records()
        if not ckpts:
            continue
        ends = phase_ends(ckpts)
        mags = [] if ends is None else magnitude_rows(load_table(r.run, ends[0]), load_table(r.run, ends[1]), *ends, n_boot, ci, seed)
        rows.append(run_table(mags, time_rows(ckpts), r.phase, r.seed))
        by_phase.setdefault(r.phase, []).append(trajectory_frame(ckpts))
    frames = {phase: mean_trajectory(fs) for phase, fs in by_phase.items()}
    return (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()), frames


def phase_end_tables(run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The per-probe tables of ``run``'s first and last phase evaluations (None with fewer than two)."""
    ends = phase_ends(run.checkpoint_records()) if run.trajectory_file.exists() else None
    return None if ends is None else (load_table(run, ends[0]), load_table(run, ends[1]))


def sft_contrasts(runs: Path, n_boot: int, ci: float, seed: int, route: str | None = None) -> pd.DataFrame:
    """Final-profile differences between every pair of SFT corpora (first seed's runs), on the probes both
    scored at their last phase evaluation (:func:`valuedrift.metrics.summary.contrast_rows`)."""
    finals = {}
    for r in discover_runs(runs, seed, route):
        if r.phase.startswith("sft/") and r.seed == seed and (tables := phase_end_tables(r.run)) is not None:
            finals[r.phase.split("/", 1)[1]] = tables[1]
    names = sorted(finals)
    rows = [row for i, a in enumerate(names) for b in names[i + 1 :]
            for row in contrast_rows(a, finals[a], b, finals[b], n_boot, ci, seed)]
    return pd.DataFrame(rows)


def delta_frame(runs: Path, n_boot: int, ci: float, seed: int, start_from: str, route: str | None = None) -> pd.DataFrame:
    """Δv at every checkpoint of every phase (:mod:`valuedrift.metrics.change`), over seeds, continued along
    its chain (preference runs from the end of ``sft/<start_from>``), with ``chain_step`` = the step on the
    base → SFT → preference-optimisation axis; ``dv_run`` is the change within the run."""
    per_seed, final_steps = [], {}
    for r in discover_runs(runs, seed, route):
        ckpts = r.run.checkpoint_records()
        tables = {c["step"]: load_table(r.run, c["step"]) for c in ckpts if r.run.eval_table(c["step"]).exists()}
        if len(tables) < 2:
            continue
        per_seed += [{"run": r.phase, "seed": r.seed, **row} for row in delta_rows(tables, n_boot, ci, seed)]
        final_steps[r.phase] = max(final_steps.get(r.phase, 0), max(tables))
    if not per_seed:
        return pd.DataFrame(columns=[*DELTA_COLUMNS, "n_seeds", "ci_kind", "dv_run", "chain_step"])
    out = continue_chains(over_seeds(pd.DataFrame(per_seed), ci), start_from)
    offsets = chain_offsets(final_steps, start_from)
    out["chain_step"] = out.step + out.run.map(offsets)
    return out


def topic_frames(runs: list[PhaseRun]) -> pd.DataFrame:
    """Trace vectors of every (split, topic) at every step, averaged over the runs (seeds) given."""
    frames = []
    for r in runs:
        for c in r.run.checkpoint_records():
            df = pd.DataFrame(c["trace"])
            df["step"] = c["step"]
            frames.append(df)
    if not frames:
        return pd.DataFrame()
    cols = [c for c in frames[0].columns if c not in ("split", "topic", "step") and c != "n"]
    return pd.concat(frames).groupby(["split", "topic", "step"], as_index=False)[cols].mean()


def capability_frame(runs: list[PhaseRun]) -> pd.DataFrame:
    """Held-out NLL (``capability/heldout_nll``) per phase, seed and step, where the probe was on."""
    recs = []
    for r in runs:  # seeds only label rows here; they are averaged per step
        for c in r.run.checkpoint_records():
            nll = c.get("metrics", {}).get(CAPABILITY_METRIC)
            if nll is not None:
                recs.append({"phase": r.phase, "seed": r.seed, "step": c["step"], "nll": nll})
    return pd.DataFrame(recs)
