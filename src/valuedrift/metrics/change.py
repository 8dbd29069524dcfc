"""Change from the start, Δv, at every checkpoint of a run, with paired CIs (pure: no file access).

For a run with checkpoints t_0 < t_1 < … and per-probe tables q_t(p) on the probes scored at t and t_0,

    Δv_t[s] = mean_p (q_t(p)[s] − q_{t_0}(p)[s])

on the probes scored at every checkpoint (the trace probes), with the paired bootstrap CI over probes of
:func:`valuedrift.metrics.summary.magnitude_rows` (the drift magnitude is the same quantity at the last
checkpoint, on the larger phase probe set). Over seeds:
the mean of the seeds' Δv with the across-seed t-interval (:func:`valuedrift.metrics.drift.across_seeds`);
one seed keeps its probe-bootstrap interval (``ci_kind``).

Runs are placed on one step axis per chain (base → SFT → preference optimisation): a preference run's
steps are offset by the final step of the SFT run it starts from (:func:`chain_offsets`), and its Δv by
that run's final Δv (:func:`continue_chains`), so each line is the change since the base model.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from valuedrift.core.vocab import ALL
from valuedrift.metrics.drift import across_seeds
from valuedrift.metrics.summary import magnitude_rows

DELTA_COLUMNS = ["run", "seed", "step", "split", "stance", "dv", "dv_lo", "dv_hi"]


def delta_rows(tables: dict[int, pd.DataFrame], n_boot: int, ci: float, seed: int) -> list[dict[str, Any]]:
    """Δv_t per (split, stance) on all topics, for each step t of ``tables`` (step -> per-probe table)
    against the first step, on the probes every table holds (the trace probes: phase ends score more, and
    the series must compare like with like); the start itself has Δv = 0 (the CI too)."""
    steps = sorted(tables)
    common = set.intersection(*(set(tables[t].probe_id) for t in steps))
    same = {t: tables[t][tables[t].probe_id.isin(common)] for t in steps}
    rows = []
    for t in steps:
        for r in magnitude_rows(same[steps[0]], same[t], steps[0], t, n_boot, ci, seed):
            if r["topic"] == ALL:
                rows.append({"step": t, "split": r["split"], "stance": r["stance"], "dv": r["magnitude"],
                             "dv_lo": r["magnitude_lo"], "dv_hi": r["magnitude_hi"], "n_probes": r["n_probes"]})
    return rows


def over_seeds(per_seed: pd.DataFrame, ci: float) -> pd.DataFrame:
    """One row per (run, step, split, stance): mean Δv over seeds with its interval (module docstring)."""
    out = []
    for (run, step, split, stance), g in per_seed.groupby(["run", "step", "split", "stance"], sort=True):
        m, lo, hi, n = across_seeds(g.dv.tolist(), ci)
        if n == 1:
            lo, hi = float(g.dv_lo.iloc[0]), float(g.dv_hi.iloc[0])
        out.append({"run": run, "step": int(step), "split": split, "stance": stance, "dv": m, "dv_lo": lo, "dv_hi": hi,
                    "n_seeds": n, "ci_kind": "seeds" if n > 1 else "probes"})
    return pd.DataFrame(out)


def continue_chains(delta: pd.DataFrame, start_from: str) -> pd.DataFrame:
    """Preference runs continue the chain of ``sft/<start_from>``: their Δv (and its band) is shifted by that
    SFT run's final Δv for the same split and stance, so a line reads as the change since the base model
    (exact for the mean: the preference run's start is the SFT run's final evaluation on the same probes;
    the band stays the run's own). ``dv_run`` keeps the change within the run."""
    out = delta.copy()
    out["dv_run"] = out.dv
    sft = out[out.run == f"sft/{start_from}"]
    if sft.empty:
        return out
    end = sft[sft.step == sft.step.max()].set_index(["split", "stance"]).dv
    po = out.run.str.startswith("po/")
    shift = [end.get((sp, st), 0.0) for sp, st in zip(out.split[po], out.stance[po], strict=True)]
    for col in ("dv", "dv_lo", "dv_hi"):
        out.loc[po, col] = out.loc[po, col] + shift
    return out


def chain_offsets(final_steps: dict[str, int], start_from: str) -> dict[str, int]:
    """Step offset of each run on its chain's axis: 0 for SFT runs, the final step of ``sft/<start_from>``
    for preference runs (they start from its final model)."""
    sft_end = final_steps.get(f"sft/{start_from}", 0)
    return {run: (sft_end if run.startswith("po/") else 0) for run in final_steps}
