"""``tune`` stage / ``valuedrift sweep``: an Optuna study over preference-optimisation hyperparameters,
each trial traced to value drift (engine: :mod:`valuedrift.sweep`; space: ``tune`` in params.yaml).

Runs trials until the study holds ``tune.n_trials`` finished ones (a killed sweep run again only runs what
is missing), then writes, from the whole study (every worker's trials):

- ``<out>/best_params.yaml``: the best trial, or the Pareto front for several objectives, as Optuna
  parameters, as params.yaml keys, and as a ready ``dvc exp run -S …`` command;
- ``<out>/trials.csv``: one row per trial (state, values, parameters, worker, MLflow run id);
- ``--metrics`` (``sweeps/metrics/sweep.json``): trial counts, best values, parameter importances;
- ``--plots`` (``sweeps/plots/sweep/``): optimisation history, parameter importances and parallel coordinates
  per objective (+ the Pareto front), each as PNG (matplotlib) and HTML (plotly; ``plotly.min.js`` once,
  beside them, so the pages open offline).

Parallel workers: ``--workers N`` (or ``tune.workers``) runs this process as worker 0 and starts N − 1
more (``--worker-index k --no-outputs``) on the same storage; on other machines start
``valuedrift sweep --worker-index k --no-outputs`` against a shared RDB storage (README).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from valuedrift.config.load import load_params
from valuedrift.core.io import write_json
from valuedrift.core.redaction import redact
from valuedrift.stages.args import check_flags, check_model_path, check_output_file, check_path, stage_parser
from valuedrift.stages.profile import dvc_set_args
from valuedrift.train.po import sft_final
from valuedrift.tune.space import override_keys
from valuedrift.tune.storage import count_trials
from valuedrift.tune.study import Sweep
from valuedrift.tune.trials import best_tags, best_trials, choice_of

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


def dvc_exp_command(overrides: dict[str, Any]) -> str:
    """The ``dvc exp run -S …`` line that reruns the pipeline with a trial's values (Hydra override syntax,
    :func:`valuedrift.stages.profile.dvc_set_args`: ``1.0e-06`` stays a number)."""
    return " ".join(shlex.quote(p) for p in ["dvc", "exp", "run", *dvc_set_args(overrides)])


def best_entries(sweep: Sweep) -> list[dict[str, Any]]:
    assert sweep.study is not None
    out = []
    for t in best_trials(sweep.study, sweep.multi):
        choice = choice_of(t, sweep.tune, sweep.dims)
        overrides = override_keys(sweep.tune, choice)
        out.append({
            "trial": t.number,
            "values": t.user_attrs.get("values", {}),
            "params": {"algorithm": choice.algorithm, **choice.values},
            "overrides": overrides,
            "dvc_exp_run": dvc_exp_command(overrides),
        })
    return out


def write_best_params(sweep: Sweep, path: Path, best: list[dict[str, Any]]) -> None:
    objectives = dict(zip(sweep.tune.objectives, sweep.spec_directions(), strict=True))
    head = (
        f"# written by `valuedrift sweep`: the best trial of study {sweep.tune.study!r}"
        + (" (several objectives: the Pareto front)" if sweep.multi else "")
        + "\n# `overrides` are params.yaml keys; `dvc_exp_run` reruns the po stage with them.\n"
    )
    body = {"study": sweep.tune.study, "objectives": objectives, "target": sweep.spec.target if sweep.spec else None,
            "split": sweep.tune.split, "best": best}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def write_trials_csv(sweep: Sweep, path: Path) -> None:
    assert sweep.study is not None
    df = sweep.study.trials_dataframe(attrs=("number", "state", "value", "datetime_start", "duration", "params", "user_attrs"))
    names = sweep.tune.objectives
    rename = {"value": names[0]} if not sweep.multi else {f"values_{i}": n for i, n in enumerate(names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    df.rename(columns=rename).to_csv(path, index=False)


def importances(sweep: Sweep) -> dict[str, dict[str, float] | str]:
    """fANOVA importance of each parameter per objective (seeded), or why it cannot be computed."""
    import optuna

    assert sweep.study is not None
    out: dict[str, dict[str, float] | str] = {}
    for i, name in enumerate(sweep.tune.objectives):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=sweep.params.seed)
        target = (lambda t, i=i: t.values[i]) if sweep.multi else None
        try:
            out[name] = {k: float(v) for k, v in optuna.importance.get_param_importances(sweep.study, evaluator=evaluator, target=target).items()}
        except (ValueError, RuntimeError) as e:
            out[name] = f"not computed: {e}"
    return out


def write_plots(sweep: Sweep, plots: Path) -> dict[str, str]:
    """PNG (optuna.visualization.matplotlib) and HTML (plotly) of each figure; returns {figure: why skipped}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import optuna
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vm

    assert sweep.study is not None
    plots.mkdir(parents=True, exist_ok=True)
    figures: dict[str, tuple[Any, Any, dict[str, Any]]] = {}
    for i, name in enumerate(sweep.tune.objectives):
        target = (lambda t, i=i: t.values[i]) if sweep.multi else None
        kw = {"target": target, "target_name": name}
        figures[f"history_{name}"] = (vis.plot_optimization_history, vm.plot_optimization_history, kw)
        figures[f"importances_{name}"] = (
            vis.plot_param_importances, vm.plot_param_importances,
            {**kw, "evaluator": optuna.importance.FanovaImportanceEvaluator(seed=sweep.params.seed)},
        )
        figures[f"parallel_coordinate_{name}"] = (vis.plot_parallel_coordinate, vm.plot_parallel_coordinate, kw)
    if not sweep.multi:  # what the pruner acts on: each trial's running objective at every checkpoint
        figures["intermediate_values"] = (vis.plot_intermediate_values, vm.plot_intermediate_values, {})
    if sweep.multi:
        figures["pareto_front"] = (vis.plot_pareto_front, vm.plot_pareto_front, {"target_names": list(sweep.tune.objectives)})
    skipped = {}
    for stem, (plotly_fn, mpl_fn, kw) in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                plotly_fn(sweep.study, **kw).write_html(plots / f"{stem}.html", include_plotlyjs="directory")
                ax = mpl_fn(sweep.study, **kw)
            fig = np.asarray(ax).flat[0].figure
            fig.savefig(plots / f"{stem}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)
        except (ValueError, RuntimeError) as e:  # e.g. importances need two complete trials
            skipped[stem] = str(e)
            log.info("plot %s skipped: %s", stem, e)
    return skipped


def write_outputs(sweep: Sweep, out: Path, metrics_path: Path, plots: Path) -> dict[str, Any]:
    """Every output file from the whole study, mirrored to the parent MLflow run."""
    assert sweep.study is not None and sweep.spec is not None
    counts = count_trials(sweep.study)
    best = best_entries(sweep)
    write_best_params(sweep, out / "best_params.yaml", best)
    write_trials_csv(sweep, out / "trials.csv")
    skipped = write_plots(sweep, plots)
    summary = {
        "study": sweep.tune.study,
        "storage": redact(sweep.storage_url),
        "objectives": dict(zip(sweep.tune.objectives, sweep.spec_directions(), strict=True)),
        "target": sweep.spec.target,
        "split": sweep.tune.split,
        "trials": {**vars(counts), "total": len(sweep.study.trials)},
        "best": [{"trial": b["trial"], **b["values"]} for b in best],
        "pareto_front": sweep.multi,
        "importances": importances(sweep),
        "plots_skipped": skipped,
    }
    write_json(metrics_path, summary)
    with sweep.parent() as parent:
        parent.set_tags(best_tags(sweep.study, sweep.multi, sweep.tune, sweep.dims))
        if best and not sweep.multi:
            parent.log_metrics({f"best/{k}": v for k, v in best[0]["values"].items()}, step=counts.finished)
        for f in (out / "best_params.yaml", out / "trials.csv", metrics_path):
            parent.log_artifact(f)
        for f in sorted(plots.glob("*.png")):
            parent.log_artifact(f, "plots")
    log.info("sweep %s: %s; best %s", sweep.tune.study, counts, summary["best"])
    return summary


# --------------------------------------------------------------------------------------------------
# Workers and the command
# --------------------------------------------------------------------------------------------------


def start_workers(a: argparse.Namespace, sft_model: Path, indices: range, threads: int) -> list[subprocess.Popen]:
    procs = []
    for k in indices:
        cmd = [sys.executable, "-m", "valuedrift.cli", "sweep", "--params", a.params, "--sft-model", str(sft_model),
               "--out", a.out, "--worker-index", str(k), "--workers", "1", "--no-outputs"]
        if a.n_trials is not None:
            cmd += ["--n-trials", str(a.n_trials)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        log.info("starting worker %d: %s", k, " ".join(cmd))
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("sweep", __doc__, raw_doc=True)
    ap.add_argument("--sft-model", default=None, help="start checkpoint of every trial (default: runs/sft/<po.start_from>/final)")
    ap.add_argument("--out", default="sweeps/tune", help="working files in <out>/work/<study>; best_params.yaml and trials.csv in <out>")
    ap.add_argument("--metrics", default="sweeps/metrics/sweep.json")
    ap.add_argument("--plots", default="sweeps/plots/sweep")
    ap.add_argument("--workers", type=int, default=None, help="worker processes on this machine (default: tune.workers)")
    ap.add_argument("--worker-index", type=int, default=0, help="this worker's index (seeds its sampler: seed + index)")
    ap.add_argument("--n-trials", type=int, default=None, help="override tune.n_trials (finished trials the study should hold)")
    ap.add_argument("--no-outputs", action="store_true", help="run trials only (extra workers)")
    ap.add_argument("--outputs-only", action="store_true", help="write the outputs from the study as it is, run no trial")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_model_path("sft-model", a.sft_model)
    check_flags(a, {}, ["out", "plots"])
    check_output_file("metrics", a.metrics)
    params = load_params(a.params)
    workers = a.workers or params.tune.workers
    if workers < 1 or a.worker_index < 0 or (a.n_trials is not None and a.n_trials < 1):
        raise SystemExit("--workers and --n-trials must be >= 1, --worker-index >= 0")

    sft_model = Path(a.sft_model) if a.sft_model else sft_final(params)
    sweep = Sweep.open(params, sft_model, Path(a.out), a.worker_index)
    if not a.outputs_only:
        extra: list[subprocess.Popen] = []
        if workers > 1:
            import torch

            threads = max(1, (os.cpu_count() or 1) // workers)
            torch.set_num_threads(threads)
            extra = start_workers(a, sft_model, range(a.worker_index + 1, a.worker_index + workers), threads)
        try:
            sweep.work(a.n_trials)
        finally:
            codes = [p.wait() for p in extra]
        if any(codes):
            raise SystemExit(f"worker(s) exited with status {codes}")
    if not a.no_outputs:
        write_outputs(sweep, Path(a.out), Path(a.metrics), Path(a.plots))
