"""One trial of a study, from the outside: its MLflow run, the callback that joins its po run to the Optuna
trial, its saved weights, and finished trials read back (the best ones, their algorithm and values).

The study that makes the trials is :class:`valuedrift.tune.study.Sweep`; this module takes the parts of it
that it reads (the Optuna study, the ``tune`` section, the search dimensions, the objectives, the baseline
record), never the Sweep itself.

A :class:`TrialCallback` reports the running objective at every checkpoint the stance tracer scored
(``trial.report``; the pruner's ``should_prune`` stops training with ``optuna.TrialPruned``), and it turns
off intermediate checkpoint saves (a trial is never resumed half-way; an interrupted one is retried).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from transformers import TrainerCallback

from valuedrift.config.schema.models import TrackingConfig
from valuedrift.config.schema.tune import TuneConfig
from valuedrift.core.rundir import RunDir
from valuedrift.tracking import Tracker
from valuedrift.tune.objectives import ObjectiveSpec
from valuedrift.tune.space import Choice, Dimension

PARENT_ATTR = "mlflow_parent_run_id"


# --------------------------------------------------------------------------------------------------
# A trial's MLflow run and folder
# --------------------------------------------------------------------------------------------------


class _KeepFailed(Exception):
    """Raised inside a reopened MLflow run so that MLflow closes it as FAILED."""


def trial_tags(study: optuna.Study, number: int, state: str) -> dict[str, str]:
    """MLflow tags of trial ``number`` of ``study``: its study, number, Optuna state and the sweep's parent run."""
    tags = {"optuna.study": study.study_name, "optuna.trial": str(number), "optuna.state": state, "stage": "tune"}
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


def close_trial_run(tracking: TrackingConfig, study: optuna.Study, run_dir: Path, number: int, state: str,
                    extra: dict[str, str] | None = None) -> None:
    """Record the final Optuna state on a trial's MLflow run after run_po left it.

    run_po's run ends FAILED when training raises (a prune or an error). A pruned trial is reopened
    and closed FINISHED; a failed one is reopened and closed FAILED again. A trial that failed before
    its run started gets a run here, so every trial has one.
    """
    tracker = Tracker(tracking, run_dir)
    tags = {**trial_tags(study, number, state), "mlflow.runName": f"trial-{number:04d}", **(extra or {})}
    try:
        with tracker.run(f"trial-{number:04d}", tags):
            if state == "FAIL":
                raise _KeepFailed
    except _KeepFailed:
        pass


def drop_models(trial_dir: Path) -> None:
    """Delete a trial's saved weights (its stance tables, trajectory and preference data stay)."""
    if not trial_dir.exists():
        return
    for d in RunDir(trial_dir).model_folders():
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Finished trials
# --------------------------------------------------------------------------------------------------


def best_trials(study: optuna.Study, multi: bool) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (``multi``: several); [] before any trial completed."""
    try:
        return list(study.best_trials) if multi else [study.best_trial]
    except ValueError:
        return []


def best_tags(study: optuna.Study, multi: bool, tune: TuneConfig, dims: dict[str, list[Dimension]]) -> dict[str, str]:
    """MLflow tags naming the best trial (its values and parameters) or the Pareto front's trials."""
    best = best_trials(study, multi)
    if not best:
        return {}
    if multi:
        return {"best.pareto_trials": ",".join(str(t.number) for t in best)}
    t = best[0]
    tags = {"best.trial": str(t.number)}
    tags.update({f"best.value.{k}": f"{v:.6g}" for k, v in t.user_attrs.get("values", {}).items()})
    tags.update({f"best.param.{k}": str(v) for k, v in choice_of(t, tune, dims).values.items()})
    tags["best.param.algorithm"] = choice_of(t, tune, dims).algorithm
    return tags


def choice_of(t: FrozenTrial, tune: TuneConfig, dims: dict[str, list[Dimension]]) -> Choice:
    """A finished trial's algorithm and decoded values (a one-algorithm study: ``tune.algorithms[0]``)."""
    algorithm = t.params.get("algorithm") or t.user_attrs.get("algorithm") or tune.algorithms[0]
    by_name = {d.name: d for d in dims.get(algorithm, [])}
    values = {k: (by_name[k].decode(v) if k in by_name else v) for k, v in t.params.items() if k != "algorithm"}
    return Choice(algorithm, values)


# --------------------------------------------------------------------------------------------------
# A running trial
# --------------------------------------------------------------------------------------------------


class TrialCallback(TrainerCallback):
    """Joins one po run to its Optuna trial (added to run_po's callbacks, after the stance tracer's).

    - start: tags the run (the one run_po opened) as a child of the sweep's parent run, logs the trial's
      parameters and the measured value gap of its preference data;
    - every step: no checkpoint is saved; each checkpoint the tracer scored since the last call gives the
      running objective values (trace probes vs the ``baseline`` record's), logged as
      ``objective/running/<name>`` and reported with ``trial.report`` (one objective); the pruner may stop
      training (TrialPruned);
    - end: the final objective values (phase probes) as ``objective/<name>``.

    ``study`` is the Optuna study the trial belongs to (its name and parent run tag the run), ``tracking``
    the ``tracking`` section, ``spec`` the study's objectives.
    """
    def __init__(self, trial: optuna.Trial, run_dir: Path, choice: Choice, extra_metrics: dict[str, float], *,
                 study: optuna.Study, tracking: TrackingConfig, spec: ObjectiveSpec, baseline: dict[str, Any]):
        self.trial, self.run_dir, self.choice = trial, Path(run_dir), choice
        self.extra_metrics = extra_metrics
        self.study, self.spec, self.baseline = study, spec, baseline
        self.multi = len(spec.names) > 1
        self.tracker = Tracker(tracking, run_dir)  # logs to the active run: run_po's
        self.last_step = 0
        self.final_values: dict[str, float] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        tags = {**trial_tags(self.study, self.trial.number, "RUNNING"), "mlflow.runName": f"trial-{self.trial.number:04d}"}
        self.tracker.set_tags(tags)
        self.tracker.log_params({f"trial.{k}": v for k, v in {"algorithm": self.choice.algorithm, **self.choice.values}.items()})
        self.tracker.log_metrics(self.extra_metrics, step=0)
        run_id = RunDir(self.run_dir).run_id()
        if run_id:
            self.trial.set_user_attr("mlflow_run_id", run_id)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        control.should_save = False  # trials are retried whole, never resumed from a checkpoint
        if state.is_world_process_zero:
            self._report(prune=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._report(prune=False)
        final = RunDir(self.run_dir).checkpoint_records()[-1]
        self.final_values = self.spec.values(self.baseline, final, final=True)
        self.tracker.log_metrics({f"objective/{k}": v for k, v in self.final_values.items()}, step=final["step"])
        self.tracker.set_tags({"optuna.state": "COMPLETE"})

    def _report(self, prune: bool) -> None:
        spec = self.spec
        new = [c for c in RunDir(self.run_dir).checkpoint_records() if c["step"] > self.last_step]
        for record in new:
            values = spec.values(self.baseline, record, final=False)
            self.tracker.log_metrics({f"objective/running/{k}": v for k, v in values.items()}, step=record["step"])
            if not self.multi:
                self.trial.report(values[spec.names[0]], record["step"])
            self.last_step = record["step"]
        if prune and new and not self.multi and self.trial.should_prune():
            self.tracker.set_tags({"optuna.state": "PRUNED"})
            raise optuna.TrialPruned(f"pruned at step {self.last_step}")
