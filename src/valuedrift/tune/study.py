"""Optuna study over preference-optimisation runs, traced to value drift (the engine of ``valuedrift sweep``).

One trial = one ``po`` run (:func:`valuedrift.train.po.run_po`, the stage's own code) from the SFT
checkpoint, with the trial's algorithm and values (tune/space.py) and the preference set rebuilt with the
trial's value gap, scored by the objectives of tune/objectives.py. A trial's MLflow run, the callback that
joins the run to its trial (pruning included) and reading finished trials back: :mod:`valuedrift.tune.trials`.

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

from valuedrift.algorithms.registry import algorithm_hparams
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import flatten, pick, to_dict
from valuedrift.config.schema.stage_table import run_input_keys
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
from valuedrift.models import load_configured, load_tokenizer
from valuedrift.tracking import Tracker, provenance_tags
from valuedrift.train.po import po_inputs, run_po
from valuedrift.train.scaffold import make_traced_run, run_fingerprint, seed_run_dir
from valuedrift.train.tracing import StanceTracer
from valuedrift.tune.objectives import ObjectiveSpec, load_reference
from valuedrift.tune.space import Dimension, apply_choice, dimensions, enqueue_values, suggest
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
from valuedrift.tune.trials import PARENT_ATTR, TrialCallback, best_tags, close_trial_run, drop_models

log = logging.getLogger(__name__)

INPUTS_ATTR = "inputs"


# --------------------------------------------------------------------------------------------------
# What a study is made from
# --------------------------------------------------------------------------------------------------


def model_digest(path: Path) -> str:
    """sha256 over the files of a model folder (names and contents)."""
    return tree_digest(path)


# shared search dimensions that replace a po key in every trial (tune/space.py)
SWEPT_PO_KEYS = {"steps": "po.max_steps", "learning_rate": "po.learning_rate"}


def study_inputs(params: Params, sft_digest: str) -> dict[str, Any]:
    """Everything that makes two trials comparable; a study only continues with the same inputs.

    A trial is a ``po`` run, so its inputs are the po stage's run inputs in the stage table
    (:func:`valuedrift.config.schema.stage_table.run_input_keys`) for each algorithm the study chooses from,
    less the values the study itself sweeps; plus the SFT checkpoint's digest, the preference set the
    trials rebuild (less its gap when swept) and the objectives. Settings that only steer the search
    (n_trials, sampler, …) are left out.
    """
    t = params.tune
    swept = {SWEPT_PO_KEYS[s] for s in t.space if s in SWEPT_PO_KEYS}
    keys = sorted({k for a in t.algorithms for k in run_input_keys("po", algorithm=a)} - swept)
    pref = to_dict(params.prepare_data.preference_sets[t.preference_set])
    if "gap" in t.space:
        pref.pop("gap")
    return {
        "run": pick(to_dict(params), keys),
        "sft_model": sft_digest,
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
                model = load_configured(self.sft_model, p.model)
                # tracker None: the baseline goes to the parent run, not to a run of its own; only step 0 is
                # scored here, so the callback's cadence (1) is never used
                traced = make_traced_run(p.eval, p.probe_seed, p.seed, None, RunDir(self.baseline_dir), tokenizer, 1)
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

    def close_trial_run(self, run_dir: Path, number: int, state: str, extra: dict[str, str] | None = None) -> None:
        """:func:`valuedrift.tune.trials.close_trial_run` for a trial of this study."""
        assert self.study is not None
        close_trial_run(self.params.tracking, self.study, run_dir, number, state, extra)

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
            callback = TrialCallback(trial, run_dir, choice, {f"data/gap/{s}": v for s, v in gap.items()}, study=self.study,
                                     tracking=self.params.tracking, spec=self.spec, baseline=self.baseline)
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
        judges = trial_params.eval.judges
        plan = plan_sets(trial_params.prepare_data.preference_sets, judges, trial_params.seed, [name], self.questions,
                         self.bank, self.profile)[0]
        bank = self.bank
        if plan.cfg.generator != "bank":
            bank, _ = lm_response_bank(plan.cfg, self.questions, plan.seed, plan.key, judges, trial_params.model)
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
            parent.set_tags(best_tags(study, self.multi, self.tune, self.dims))

    def work(self, n_trials: int | None = None, timeout_s: float | None = None) -> int:
        """Run trials until the study holds ``n_trials`` finished ones (or the timeout, or a spent grid)."""
        assert self.study is not None
        n_trials = n_trials or self.tune.n_trials
        timeout_s = timeout_s if timeout_s is not None else self.tune.timeout_s
        start, ran = time.monotonic(), 0
        while True:
            self.reclaim_interrupted()
            with warnings.catch_warnings():  # trials of dead workers on other hosts (RDB heartbeats)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
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
