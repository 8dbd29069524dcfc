"""Optuna study over preference-optimisation runs, traced to value drift (the engine of ``valuedrift sweep``).

One trial = one ``po`` run (:func:`valuedrift.train.po.run_po`, the stage's own code) from the SFT
checkpoint, with the trial's algorithm and values (tune/space.py) and the preference set rebuilt with the
trial's value gap, scored by the objectives of tune/objectives.py. A :class:`TrialCallback` joins the run
to its trial: it reports the running objective at every checkpoint the stance tracer scored
(``trial.report``; the pruner's ``should_prune`` stops training with ``optuna.TrialPruned``), and it turns
off intermediate checkpoint saves (a trial is never resumed half-way; an interrupted one is retried).

The SFT checkpoint is scored once per study (the *baseline*) and every trial starts from that record, so
all trials are compared with the same v_t0.

Storage, sampler, pruner and worker bookkeeping: :mod:`valuedrift.tune.storage`. The study is loaded if it exists (``load_if_exists``) and must have
been made from the same inputs (SFT model, eval and po settings, objectives): otherwise the sweep stops
naming ``tune.study``.

Failures and resumption: a trial that raises is FAIL (its error is a user attribute and an MLflow tag) and
the sweep goes on. A trial whose worker died (a killed sweep) is found either by its heartbeat (RDB
storages, ``tune.heartbeat_s``) or, on the same host, because its process is gone; it is marked FAIL
(interrupted) and re-enqueued with the same parameters. ``tune.n_trials`` counts finished trials
(COMPLETE, PRUNED, FAIL from an error) of the whole study, over every worker and every invocation: a
killed sweep run again only runs what is missing.

MLflow: the sweep's parent run is opened by hand; every trial is the ``po`` run that run_po opens, tagged
``mlflow.parentRunId`` (what makes a run nested in MLflow) with the trial's parameters, its per-checkpoint
stance metrics (logged by the tracer), the running and final objective values and ``optuna.state``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from valuedrift.algorithms.registry import algorithm_hparams
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import flatten, to_dict
from valuedrift.config.schema.tune import TuneConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import fingerprint, tree_digest, write_jsonl
from valuedrift.core.paths import preference_file
from valuedrift.core.redaction import redact  # storage URLs may hold a password
from valuedrift.core.rundir import RunDir
from valuedrift.data.bank import load_bank
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.preferences import generate_pairs, resolve_target, value_gap
from valuedrift.data.probes import load_probe_bank
from valuedrift.generation.lm_answers import lm_response_bank
from valuedrift.generation.preference_sets import plan_sets
from valuedrift.models import load_model, load_tokenizer
from valuedrift.tracking import Tracker, provenance_tags
from valuedrift.train.po import po_inputs, run_po
from valuedrift.train.scaffold import make_traced_run, run_fingerprint, seed_run_dir
from valuedrift.train.tracing import StanceTracer
from valuedrift.tune.objectives import ObjectiveSpec, load_reference
from valuedrift.tune.space import (
    Choice,
    Dimension,
    apply_choice,
    dimensions,
    enqueue_values,
    suggest,
)
from valuedrift.tune.storage import (
    check_storage,
    count_trials,
    make_pruner,
    make_sampler,
    make_storage,
    process_alive,
    resolve_storage,
    worker_identity,
)

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
INPUTS_ATTR = "inputs"


# --------------------------------------------------------------------------------------------------
# What a study is made from
# --------------------------------------------------------------------------------------------------


def model_digest(path: Path) -> str:
    """sha256 over the files of a model folder (names and contents)."""
    return tree_digest(path)


def study_inputs(params: Params, sft_digest: str) -> dict[str, Any]:
    """Everything that makes two trials comparable; a study only continues with the same inputs.

    Values the study itself sweeps, and settings that only steer the search (n_trials, sampler, …),
    are left out.
    """
    t = params.tune
    ev = params.eval
    swept = {"steps": "max_steps", "learning_rate": "learning_rate"}
    po = {k: v for k, v in to_dict(params.po).items()
          if k not in ("algorithms", "preference_sets") and k not in {swept[s] for s in t.space if s in swept}}
    pref = to_dict(params.prepare_data.preference_sets[t.preference_set])
    if "gap" in t.space:
        pref.pop("gap")
    return {
        "seed": params.seed,
        "model": {"dtype": params.model.dtype, "trust_remote_code": params.model.trust_remote_code},
        "sft_model": sft_digest,
        "eval": {k: getattr(ev, k) for k in ("temperature", "trace_probes_per_topic", "phase_probes_per_topic", "splits",
                                              "prompt_format", "system_prompt", "bootstrap", "ci", "capability_rows")},
        "po": po,
        "preference_set": {"name": t.preference_set, **pref},
        "objectives": {"names": t.objectives, "target": t.target, "split": t.split, "reference": t.reference,
                       "alignment": t.alignment},
    }


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = flatten(json.loads(json.dumps(old, default=str))), flatten(json.loads(json.dumps(new, default=str)))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------


class _KeepFailed(Exception):
    """Raised inside a reopened MLflow run so that MLflow closes it as FAILED."""

@dataclass
class Sweep:
    """One worker's view of a study: params, storage, baseline record, objectives and the MLflow parent."""

    params: Params
    sft_model: Path
    work_dir: Path  # <out>/work/<study>
    storage_url: str
    worker_index: int = 0
    dims: dict[str, list[Dimension]] = field(default_factory=dict)
    study: optuna.Study | None = None
    storage: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    baseline_dir: Path | None = None
    spec: ObjectiveSpec | None = None
    profile: dict[str, float] = field(default_factory=dict)
    questions: list[Any] = field(default_factory=list)
    bank: Any = None

    @property
    def tune(self) -> TuneConfig:
        return self.params.tune

    @property
    def multi(self) -> bool:
        return len(self.tune.objectives) > 1

    # -- setup ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, params: Params, sft_model: Path, out: Path, worker_index: int = 0) -> Sweep:
        """Check everything, then load or create the study, score the baseline and open the MLflow parent."""
        tune = params.tune
        url = resolve_storage(tune)
        check_storage(url)
        if not (Path(sft_model) / "config.json").exists():
            raise ConfigError("po.start_from", f"{sft_model}: no SFT checkpoint there (config.json missing); run the sft stage first")
        sweep = cls(params, Path(sft_model), Path(out) / "work" / tune.study, url, worker_index, dims=dimensions(tune))
        reference = load_reference(tune.reference, params.eval.reference_profiles) if tune.reference is not None else None
        sweep.questions = load_probe_bank(Path("data"), annotated_only=False)
        sweep.bank = load_bank(Path("data"))
        sweep.inputs = study_inputs(params, model_digest(sweep.sft_model))
        sweep._open_study()
        sweep._score_baseline()
        sweep.spec = ObjectiveSpec(list(tune.objectives), sweep._target(), tune.split, reference, tune.alignment)
        sweep.spec.check_reference_topics(sweep.baseline["full"])
        with sweep.parent() as parent:
            if 0 not in parent.logged_steps("baseline/stance/all/support"):
                parent.log_metrics({f"baseline/{k}": v for k, v in StanceTracer.record_metrics(sweep.baseline).items()}, step=0)
        return sweep

    def _open_study(self) -> None:
        tune = self.tune
        self.storage = make_storage(self.storage_url, tune.heartbeat_s, self.on_interrupted)
        sampler = make_sampler(tune, self.params.seed + self.worker_index, self.dims)
        pruner = make_pruner(tune)
        try:
            study = optuna.load_study(study_name=tune.study, storage=self.storage, sampler=sampler, pruner=pruner)
        except KeyError:
            study = optuna.create_study(study_name=tune.study, storage=self.storage, sampler=sampler, pruner=pruner,
                                        directions=self.spec_directions(), load_if_exists=True)
        stored = study.user_attrs.get(INPUTS_ATTR)
        if stored is None:
            study.set_user_attr(INPUTS_ATTR, json.loads(json.dumps(self.inputs, default=str)))
        elif changed := changed_keys(stored, self.inputs):
            raise ConfigError(
                "tune.study",
                f"study {tune.study!r} in {redact(self.storage_url)} was run with other inputs (changed: "
                f"{', '.join(changed[:8])}); choose a new tune.study, or delete the old one "
                f"(optuna delete-study --study-name {tune.study} --storage <storage>)",
            )
        for i, entry in enumerate(tune.enqueue):
            study.enqueue_trial(enqueue_values(tune, entry, f"tune.enqueue[{i}]", self.dims), skip_if_exists=True)
        self.study = study
        log.info("study %s in %s: %s", tune.study, redact(self.storage_url), count_trials(study))

    def _score_baseline(self) -> None:
        """Score the SFT checkpoint once (step 0 of every trial); cached on disk under the inputs' hash."""
        from filelock import FileLock


        p = self.params
        self.baseline_dir = self.work_dir / f"baseline-{fingerprint(self.inputs)[:12]}"
        self.baseline_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.baseline_dir) + ".lock"):
            traj = RunDir(self.baseline_dir).trajectory()
            start = [c for c in traj["checkpoints"] if c["step"] == 0 and c["phase"]]
            if start:
                self.baseline = start[0]
            else:
                log.info("scoring the SFT checkpoint %s (baseline of every trial)", self.sft_model)
                tokenizer = load_tokenizer(self.sft_model, p.model.trust_remote_code)
                model = load_model(self.sft_model, p.model.dtype, p.model.device, p.model.trust_remote_code)
                # tracker None: the baseline goes to the parent run, not to a run of its own
                traced = make_traced_run(p.eval, p.probe_seed, p.seed, None, RunDir(self.baseline_dir), tokenizer, p.po.eval_every)
                self.baseline = traced.tracer.evaluate(model, 0, phase=True)
                del model
        self.profile = StanceTracer.summary(self.baseline)

    def _target(self) -> str:

        if self.tune.target != "auto":
            return self.tune.target
        cfg = self.params.prepare_data.preference_sets[self.tune.preference_set]
        return resolve_target(cfg.target, self.profile, f"prepare_data.preference_sets.{self.tune.preference_set}.target")

    # -- MLflow ----------------------------------------------------------------------------------------
    @property
    def parent_dir(self) -> Path:
        return self.work_dir / "parent"

    @contextmanager
    def parent(self) -> Iterator[Tracker]:
        """Open (or reopen) the sweep's parent MLflow run; its id lives in the study, shared by every worker."""
        assert self.study is not None
        run_id = self.study.user_attrs.get(PARENT_ATTR)
        id_file = RunDir(self.parent_dir).run_id_file
        self.parent_dir.mkdir(parents=True, exist_ok=True)
        if run_id:
            id_file.write_text(run_id + "\n")
        elif id_file.exists():
            id_file.unlink()  # a run of an earlier study of the same name
        tracker = Tracker(self.params.tracking, self.parent_dir)
        tags = {**provenance_tags(), "stage": "tune", "algorithm": "sweep", "optuna.study": self.tune.study,
                "optuna.storage": redact(self.storage_url), "optuna.directions": ",".join(self.spec_directions())}
        mlflow_params = {f"tune.{k}": v for k, v in flatten(to_dict(self.tune)).items()}
        mlflow_params["tune.storage"] = redact(self.storage_url)
        with tracker.run(f"sweep-{self.tune.study}", tags, mlflow_params):
            if not run_id and tracker.run_id:
                self.study.set_user_attr(PARENT_ATTR, tracker.run_id)
            yield tracker

    def spec_directions(self) -> list[str]:
        return ObjectiveSpec(list(self.tune.objectives), "support", self.tune.split).directions

    def trial_tags(self, number: int, state: str) -> dict[str, str]:
        assert self.study is not None
        tags = {"optuna.study": self.tune.study, "optuna.trial": str(number), "optuna.state": state, "stage": "tune"}
        parent = self.study.user_attrs.get(PARENT_ATTR)
        if parent:
            tags["mlflow.parentRunId"] = parent
        return tags

    def close_trial_run(self, run_dir: Path, number: int, state: str, extra: dict[str, str] | None = None) -> None:
        """Record the final Optuna state on a trial's MLflow run after run_po left it.

        run_po's run ends FAILED when training raises (a prune or an error). A pruned trial is reopened
        and closed FINISHED; a failed one is reopened and closed FAILED again. A trial that failed before
        its run started gets a run here, so every trial has one.
        """
        tracker = Tracker(self.params.tracking, run_dir)
        tags = {**self.trial_tags(number, state), "mlflow.runName": f"trial-{number:04d}", **(extra or {})}
        try:
            with tracker.run(f"trial-{number:04d}", tags):
                if state == "FAIL":
                    raise _KeepFailed
        except _KeepFailed:
            pass

    # -- trials ----------------------------------------------------------------------------------------
    def trial_dir(self, number: int) -> Path:
        return self.work_dir / "trials" / f"{number:04d}"

    def objective(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        assert self.spec is not None
        trial.set_user_attr("worker", worker_identity(self.worker_index))
        pref = self.tune.preference_set
        trial_dir = run_dir = self.trial_dir(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        try:
            choice = suggest(trial, self.tune, self.dims)
            trial.set_user_attr("algorithm", choice.algorithm)
            trial_params = apply_choice(self.params, self.tune, choice)
            # the folder run_po writes to (…/seeds/<k> when seed is not seeds[0])
            run_dir = seed_run_dir(trial_dir, f"{choice.algorithm}-{pref}", trial_params).path
            trial.set_user_attr("run_dir", str(run_dir))
            processed = trial_dir / "processed"
            data_file = preference_file(processed, pref)
            gap = self.write_preference_set(trial_params, data_file)
            hparams = algorithm_hparams(trial_params.po.hparams, choice.algorithm)
            inputs = po_inputs(trial_params, choice.algorithm, hparams)
            self.start_from_baseline(run_dir, run_fingerprint(trial_params, inputs, data_file, self.sft_model))
            callback = TrialCallback(self, trial, run_dir, choice, {f"data/gap/{s}": v for s, v in gap.items()})
            run_po(trial_params, self.sft_model, processed, trial_dir, choice.algorithm, pref, callbacks=[callback])
            values = callback.final_values
            if values is None:
                raise RuntimeError("training ended without a final stance evaluation")
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            if bad:
                raise ValueError(f"objective value(s) not finite: {bad}")
        except optuna.TrialPruned:
            self.close_trial_run(run_dir, trial.number, "PRUNED")
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:1000])
            self.close_trial_run(run_dir, trial.number, "FAIL", {"optuna.error": f"{type(e).__name__}: {e}"[:500]})
            raise
        finally:
            if not self.tune.keep_models:
                drop_models(trial_dir)
        trial.set_user_attr("values", values)
        ordered = tuple(values[n] for n in self.spec.names)
        return ordered if self.multi else ordered[0]

    def write_preference_set(self, trial_params: Params, path: Path) -> dict[str, float]:
        """The trial's preference set, built as the preferences stage builds it (same seed, target and
        generator) but with the trial's gap; returns its value gap per stance (chosen − rejected shares).
        The stage's gap analysis (bootstrap table, plot) is left out: the gap is exact by construction."""
        name = self.tune.preference_set
        plan = plan_sets(trial_params, [name], self.questions, self.bank, self.profile)[0]
        bank = self.bank
        if plan.cfg.generator != "bank":

            bank, _ = lm_response_bank(plan.cfg, self.questions, plan.seed, plan.key, trial_params)
        pairs = generate_pairs(plan.cfg, self.questions, bank, plan.seed, plan.target, plan.key)
        assert_no_leaks(pairs, self.questions, f"preference set {name}")
        write_jsonl(path, pairs)
        return value_gap(pairs)

    def start_from_baseline(self, run_dir: Path, run_fp: str) -> None:
        """Give the trial's run directory the baseline record as its step 0, under run_po's fingerprint,
        so run_po's tracer skips re-scoring the SFT checkpoint (and re-sends step 0 to the trial's run)."""
        assert self.baseline_dir is not None
        RunDir(run_dir).seed_from(RunDir(self.baseline_dir), run_fp)

    # -- interrupted trials ------------------------------------------------------------------------------
    def on_interrupted(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        """A trial whose worker died: retry it with the same parameters, and close its MLflow run."""
        # Optuna's own retry: a WAITING copy with the same parameters and system attributes (a grid point
        # keeps its grid id); RetryHeartbeatStaleTrialCallback.retried_trial_number names the original
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)
        log.warning("trial %d was interrupted (its worker died); re-enqueued with the same parameters", frozen.number)
        run_dir = frozen.user_attrs.get("run_dir")
        if run_dir:  # its MLflow run (or a new one, if it died before training) is closed FAILED
            self.close_trial_run(Path(run_dir), frozen.number, "FAIL", {"optuna.interrupted": "true"})

    def reclaim_interrupted(self) -> int:
        """Fail and retry RUNNING trials whose worker process on this host is gone (heartbeats cover
        other hosts on RDB storages)."""
        assert self.study is not None
        host, n = socket.gethostname(), 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if not worker or worker.get("host") != host or process_alive(worker):
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
            self.on_interrupted(self.study, t)
            n += 1
        return n

    # -- the worker loop -----------------------------------------------------------------------------------
    def after_trial(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        """Mirror each finished trial and the best so far to the parent run."""
        counts = count_trials(study)
        with self.parent() as parent:
            parent.log_metrics({f"trials/{k}": float(v) for k, v in vars(counts).items()}, step=frozen.number)
            if frozen.state == TrialState.COMPLETE:
                values = frozen.user_attrs.get("values", {})
                parent.log_metrics({f"trial/{k}": v for k, v in values.items()}, step=frozen.number)
            parent.set_tags(best_tags(self))

    def work(self, n_trials: int | None = None, timeout_s: float | None = None) -> int:
        """Run trials until the study holds ``n_trials`` finished ones (or the timeout, or a spent grid)."""
        assert self.study is not None
        n_trials = n_trials or self.tune.n_trials
        timeout_s = timeout_s if timeout_s is not None else self.tune.timeout_s
        start, ran = time.monotonic(), 0
        while True:
            self.reclaim_interrupted()
            counts = count_trials(self.study)
            if counts.finished + counts.running >= n_trials:
                break
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                log.info("tune.timeout_s reached: no new trial starts")
                break
            sampler = self.study.sampler
            if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study) and not counts.waiting:
                log.info("the grid is exhausted")
                break
            self.study.optimize(self.objective, n_trials=1, catch=(Exception,), callbacks=[self.after_trial], gc_after_trial=True)
            ran += 1
        log.info("worker %d ran %d trial(s); study now %s", self.worker_index, ran, count_trials(self.study))
        return ran


def drop_models(trial_dir: Path) -> None:
    """Delete a trial's saved weights (its stance tables, trajectory and preference data stay)."""
    if not trial_dir.exists():
        return
    for d in RunDir(trial_dir).model_folders():
        shutil.rmtree(d, ignore_errors=True)


def best_trials(sweep: Sweep) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several); [] before any trial completed."""
    assert sweep.study is not None
    try:
        return list(sweep.study.best_trials) if sweep.multi else [sweep.study.best_trial]
    except ValueError:
        return []


def best_tags(sweep: Sweep) -> dict[str, str]:
    best = best_trials(sweep)
    if not best:
        return {}
    if sweep.multi:
        return {"best.pareto_trials": ",".join(str(t.number) for t in best)}
    t = best[0]
    tags = {"best.trial": str(t.number)}
    tags.update({f"best.value.{k}": f"{v:.6g}" for k, v in t.user_attrs.get("values", {}).items()})
    tags.update({f"best.param.{k}": str(v) for k, v in choice_of(sweep, t).values.items()})
    tags["best.param.algorithm"] = choice_of(sweep, t).algorithm
    return tags


def choice_of(sweep: Sweep, t: FrozenTrial) -> Choice:
    """A finished trial's algorithm and decoded values."""
    algorithm = t.params.get("algorithm") or t.user_attrs.get("algorithm") or sweep.tune.algorithms[0]
    by_name = {d.name: d for d in sweep.dims.get(algorithm, [])}
    values = {k: (by_name[k].decode(v) if k in by_name else v) for k, v in t.params.items() if k != "algorithm"}
    return Choice(algorithm, values)


class TrialCallback(TrainerCallback):
    """Joins one po run to its Optuna trial (added to run_po's callbacks, after the stance tracer's).

    - start: tags the run (the one run_po opened) as a child of the sweep's parent run, logs the trial's
      parameters and the measured value gap of its preference data;
    - every step: no checkpoint is saved; each checkpoint the tracer scored since the last call gives the
      running objective values (trace probes vs the baseline's), logged as ``objective/running/<name>``
      and reported with ``trial.report`` (one objective); the pruner may stop training (TrialPruned);
    - end: the final objective values (phase probes) as ``objective/<name>``.
    """
    def __init__(self, sweep: Sweep, trial: optuna.Trial, run_dir: Path, choice: Choice, extra_metrics: dict[str, float]):
        self.sweep, self.trial, self.run_dir, self.choice = sweep, trial, Path(run_dir), choice
        self.extra_metrics = extra_metrics
        self.tracker = Tracker(sweep.params.tracking, run_dir)  # logs to the active run: run_po's
        self.last_step = 0
        self.final_values: dict[str, float] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        tags = {**self.sweep.trial_tags(self.trial.number, "RUNNING"), "mlflow.runName": f"trial-{self.trial.number:04d}"}
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
        assert self.sweep.spec is not None
        self.final_values = self.sweep.spec.values(self.sweep.baseline, final, final=True)
        self.tracker.log_metrics({f"objective/{k}": v for k, v in self.final_values.items()}, step=final["step"])
        self.tracker.set_tags({"optuna.state": "COMPLETE"})

    def _report(self, prune: bool) -> None:
        spec = self.sweep.spec
        assert spec is not None
        new = [c for c in RunDir(self.run_dir).checkpoint_records() if c["step"] > self.last_step]
        for record in new:
            values = spec.values(self.sweep.baseline, record, final=False)
            self.tracker.log_metrics({f"objective/running/{k}": v for k, v in values.items()}, step=record["step"])
            if not self.sweep.multi:
                self.trial.report(values[spec.names[0]], record["step"])
            self.last_step = record["step"]
        if prune and new and not self.sweep.multi and self.trial.should_prune():
            self.tracker.set_tags({"optuna.state": "PRUNED"})
            raise optuna.TrialPruned(f"pruned at step {self.last_step}")
