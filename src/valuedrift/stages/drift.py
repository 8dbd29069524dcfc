"""``drift`` stage: drift magnitude and drift time per phase, split, topic and stance.

Phases: ``sft/<corpus>`` (base → end of SFT) and ``po/<algorithm>-<set>`` (SFT → end of the run). For
each phase:

- magnitude M_s = v_tn − v_t0 on the phase probe set (all annotated probes by default), with a paired
  bootstrap CI over probes;
- drift time on the trace probe set, which is scored at every checkpoint.

Runs repeated over seeds (``runs/<kind>/<name>/seeds/<k>/``) are aggregated: mean over seeds with an
across-seed t-interval (with one seed: the probe-bootstrap CI), and every figure carries its seed count.
The maths is :mod:`valuedrift.metrics.summary` (definitions: docs/definitions.md), reading the runs
:mod:`valuedrift.reporting.runs`, the figure :mod:`valuedrift.reporting.figures`.

Writes ``metrics/drift_table.csv`` (every run × split × topic × stance), ``metrics/drift_summary.csv``
(aggregated over seeds), ``metrics/drift.json`` (headline numbers for ``dvc metrics``),
``plots/trajectory/<phase>.csv`` (trajectory levels), ``plots/delta_<split>.csv`` (Δv with paired CIs at
every checkpoint on each chain's step axis: the DVC plots), ``plots/trajectories.png`` (that Δv per chain and
stance) and ``metrics/sft_contrasts.csv``
(final-profile differences between the SFT corpora, with paired CIs) for the likelihood route;
the same for the quick judged route (runs traced with ``eval.trace_judged``) under ``metrics/judged/`` and
``plots/judged/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from valuedrift.config.load import load_params
from valuedrift.core.io import write_json
from valuedrift.core.rundir import JUDGED_DIR
from valuedrift.metrics.summary import headline, summarise
from valuedrift.reporting.figures import plot_delta_chains
from valuedrift.reporting.runs import compute, delta_frame, sft_contrasts
from valuedrift.stages.args import check_flags, check_path, stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("drift", __doc__, "runs", "plots")
    ap.add_argument("--metrics", default="metrics")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_flags(a, {"runs": "dir"}, ["metrics", "plots"])
    params = load_params(a.params)
    metrics, plots = Path(a.metrics), Path(a.plots)
    routes: list[str | None] = [None, JUDGED_DIR] if params.eval.trace_judged else [None]
    if not params.eval.trace_judged:  # the judged folders are declared outputs: say why they are empty
        for folder in (metrics / JUDGED_DIR, plots / JUDGED_DIR):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "README.txt").write_text("no judged route: eval.trace_judged is false\n")
    for route in routes:
        per_run, frames = compute(Path(a.runs), params.eval.bootstrap, params.eval.ci, params.seeds[0], route)
        if per_run.empty:
            where = f"{a.runs}/<kind>/<name>/[seeds/<k>/]{route + '/' if route else ''}trajectory.json"
            raise SystemExit(f"no trajectories found under {where}; run sft/po first")
        out, plot_dir = (metrics / route, plots / route) if route else (metrics, plots)
        write_route(per_run, frames, params.eval.ci, out, plot_dir, route or "likelihood")
        sft_contrasts(Path(a.runs), params.eval.bootstrap, params.eval.ci, params.seeds[0], route).to_csv(
            out / "sft_contrasts.csv", index=False)
        delta = delta_frame(Path(a.runs), params.eval.bootstrap, params.eval.ci, params.seeds[0], params.po.start_from, route)
        write_delta(delta, plot_dir)
        plot_delta_chains(delta, plot_dir / "trajectories.png", params.po.start_from, f"{route or 'likelihood'} route")


DELTA_FILE = "delta_{split}.csv"  # DVC plot data (dvc.yaml top-level plots, template .dvc/plots/delta.json)


def write_delta(delta: Any, plots: Path) -> None:
    """Δv with its paired CI at every checkpoint, one file per split (rows: run, stance, step on the chain's
    axis), for ``dvc plots show`` / ``dvc plots diff``."""
    cols = ["chain_step", "step", "run", "stance", "dv", "dv_lo", "dv_hi", "dv_run", "n_seeds", "ci_kind"]
    plots.mkdir(parents=True, exist_ok=True)
    for split in ("all", "dev", "test"):
        delta[delta.split == split][cols].to_csv(plots / DELTA_FILE.format(split=split), index=False)


def write_route(per_run: Any, frames: dict[str, Any], ci: float, metrics: Path, plots: Path, route: str) -> None:
    """One route's drift tables, headline numbers, trajectory plot data and figure."""
    summary = summarise(per_run, ci)
    metrics.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(metrics / "drift_table.csv", index=False)
    summary.to_csv(metrics / "drift_summary.csv", index=False)
    write_json(metrics / "drift.json", headline(summary))
    for phase, df in frames.items():
        out = plots / "trajectory" / f"{phase.replace('/', '__')}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    log.info("drift (%s route): %d phases, %d runs; tables in %s", route, len(frames), per_run.groupby(["phase", "seed"]).ngroups, metrics)
