"""Per-checkpoint stance tracing during training.

:class:`StanceTracer` scores the probes on the live model, writes the per-probe table and the value
vectors to the run directory (the source of truth), and mirrors them to MLflow at the global step.
:class:`StanceTraceCallback` calls it at step 0, every ``eval_every`` steps, and at the end of training.

Two probe sets: the *trace* set (``eval.trace_probes_per_topic`` per topic) is scored at every checkpoint,
so the trajectory and drift time compare like with like; the *phase* set (all annotated probes by
default) is scored at the first and last checkpoint of a run, for drift magnitude. The trace set is a
subset of the phase set. MLflow ``stance/…`` metrics come from the trace set; ``phase/stance/…`` from
the phase set.

Resuming after an interruption: the trajectory on disk says which steps were already scored; those are
not scored again, and any step that is on disk but missing from MLflow is re-sent, so MLflow holds each
checkpoint's metrics exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import TrainerCallback

from valuedrift.core.io import iter_jsonl, write_json, write_jsonl
from valuedrift.core.rundir import EVALS_DIR, RunDir
from valuedrift.data.schemas import Probe
from valuedrift.metrics.summary import drift_metrics, phase_ends
from valuedrift.stance.likelihood import LikelihoodScorer
from valuedrift.stance.stored import final_evaluation, scorer_signature
from valuedrift.stance.vectors import metric_dict, record_profile, value_vectors
from valuedrift.tracking import Tracker

log = logging.getLogger(__name__)


class CheckpointModels:
    """One MLflow logged model per checkpoint of a run (:meth:`Tracker.checkpoint_model`), made the first time
    a route logs that step, so both routes' metrics land on the same model."""

    def __init__(self, tracker: Tracker, name: str, run_dir: Path):
        self.tracker, self.name, self.run_dir, self.ids = tracker, name, Path(run_dir), {}

    def model_id(self, step: int) -> str | None:
        if step not in self.ids:
            where = (f"{self.run_dir / 'final'} for the last step; earlier checkpoints are resume-only and dropped "
                     "when the run ends (weights are DVC outputs, not MLflow artifacts)")
            self.ids[step] = self.tracker.checkpoint_model(f"{self.name}-step-{step}", step,
                                                           {"run_folder": str(self.run_dir), "weights": where})
        return self.ids[step]


class StanceTracer:
    def __init__(
        self,
        scorer: LikelihoodScorer,
        trace_probes: list[Probe],
        phase_probes: list[Probe],
        run_dir: Path,
        tracker: Tracker | None,
        n_boot: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
        route: str = "",
    ):
        trace_ids = {p.id for p in trace_probes}
        self.scorer = scorer
        self.trace_probes = trace_probes
        # the phase set always contains the trace set
        self.phase_probes = phase_probes + [p for p in trace_probes if p.id not in {q.id for q in phase_probes}]
        self.trace_ids = trace_ids
        self.run_dir = Path(run_dir)
        self.run = RunDir(run_dir)
        self.tracker = tracker
        self.n_boot, self.ci, self.seed = n_boot, ci, seed
        # "" = the run's main (likelihood) route; a name (e.g. "judged") prefixes its MLflow metrics and
        # artifacts, and its run folder is <run>/<name>
        self.route = route
        self.trajectory = self.run.trajectory()
        self.eval_seconds = 0.0
        # called with each new checkpoint record after it is on disk and in MLflow (e.g. Optuna's
        # trial.report); an exception raised here (optuna.TrialPruned) stops training
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        # the run's checkpoints as MLflow logged models, shared by its routes (set by the run's scaffold)
        self.models: CheckpointModels | None = None
        # optional CapabilityProbe measured beside the stances at every checkpoint (capability/* metrics)
        self.capability: Any = None

    def done(self, step: int, phase: bool) -> bool:
        """Whether ``step`` is already scored (a phase request needs a phase record)."""
        return any(c["step"] == step and (c["phase"] or not phase) for c in self.trajectory["checkpoints"])

    def evaluate(self, model: Any, step: int, phase: bool, extra: dict[str, float] | None = None) -> dict[str, Any] | None:
        """Score the model at ``step``; skip if the trajectory already has it. Returns the checkpoint record."""
        if self.done(step, phase):
            return None
        t0 = time.perf_counter()
        probes = self.phase_probes if phase else self.trace_probes
        rows = self.scorer.score(model, probes, progress=True)
        if self.capability is not None:
            extra = {**(extra or {}), **self.capability.measure(model)}
        self.eval_seconds += time.perf_counter() - t0
        return self._store(step, phase, rows, extra)

    def scorer_signature(self) -> dict[str, Any]:
        return scorer_signature(self.scorer)

    def adopt_start(self, source_dir: Path) -> bool:
        """Take the last (phase) evaluation of the run this one starts from as this run's step 0.

        A preference run starts from the SFT checkpoint's exact weights, so scoring them again would
        only repeat the SFT run's final evaluation. Adopted only when that evaluation exists, was a phase
        evaluation, used the same scorer settings and the same phase probes; returns whether it was.
        """
        if self.done(0, True):
            return False
        found = final_evaluation(Path(source_dir), self.scorer_signature(), {p.id for p in self.phase_probes})
        if found is None:
            return False
        rows, metrics = found
        log.info("step 0 = the final evaluation of %s (same weights, same probes): not scored again", source_dir)
        self._store(0, True, rows, metrics)
        return True

    def _store(self, step: int, phase: bool, rows: list[dict[str, Any]], extra: dict[str, float] | None) -> dict[str, Any]:
        """Build the checkpoint record from per-probe rows; write it to disk, then MLflow, then listeners."""
        table = pd.DataFrame(rows)
        trace_vec = value_vectors(table[table.probe_id.isin(self.trace_ids)], self.n_boot, self.ci, self.seed)
        record: dict[str, Any] = {
            "step": step,
            "phase": phase,
            "n_probes": len(rows),
            "trace": trace_vec.to_dict(orient="records"),
            "metrics": dict(extra or {}),
        }
        if phase:
            record["full"] = value_vectors(table, self.n_boot, self.ci, self.seed).to_dict(orient="records")
        # disk first (source of truth), then MLflow
        table_path = self.run.eval_table(step)
        write_jsonl(table_path, rows)
        self.trajectory["checkpoints"] = [c for c in self.trajectory["checkpoints"] if c["step"] != step] + [record]
        self.trajectory["checkpoints"].sort(key=lambda c: c["step"])
        self.trajectory["scorer"] = self.scorer_signature()
        write_json(self.run.trajectory_file, self.trajectory)
        self._mirror(record, table_path, table)
        for listener in self.listeners:
            listener(record)
        log.info("step %d: stance/all %s", step, {k: round(v, 3) for k, v in self.summary(record).items()})
        return record

    @staticmethod
    def summary(record: dict[str, Any]) -> dict[str, float]:
        return record_profile(record)

    @staticmethod
    def record_metrics(record: dict[str, Any]) -> dict[str, float]:
        metrics = metric_dict(pd.DataFrame(record["trace"]))
        if record.get("full"):
            metrics.update({f"phase/{k}": v for k, v in metric_dict(pd.DataFrame(record["full"])).items()})
        metrics.update(record.get("metrics", {}))
        return metrics

    def _prefixed(self, metrics: dict[str, float]) -> dict[str, float]:
        return {f"{self.route}/{k}": v for k, v in metrics.items()} if self.route else metrics

    def _artifact_dir(self, sub: str | None = None) -> str | None:
        parts = [p for p in (self.route, sub) if p]
        return "/".join(parts) or None

    def _mirror(self, record: dict[str, Any], table_path: Path, table: pd.DataFrame | None = None) -> None:
        """Metrics (linked to the checkpoint's logged model), the per-probe table (JSONL artifact + MLflow
        table of the stance columns) and the trajectory file."""
        if self.tracker is None:
            return
        model_id = self.models.model_id(record["step"]) if self.models is not None else None
        self.tracker.log_metrics(self._prefixed(self.record_metrics(record)), step=record["step"], model_id=model_id)
        self.tracker.log_artifact(table_path, self._artifact_dir(EVALS_DIR))
        if table is not None:
            cols = [c for c in table.columns if c != "samples"]  # answers stay in the JSONL artifact
            self.tracker.log_table(table[cols], f"{self._artifact_dir('tables')}/step_{record['step']:06d}.json")
        self.tracker.log_artifact(self.run.trajectory_file, self._artifact_dir())

    def log_phase_drift(self) -> dict[str, float]:
        """At the end of the run: its drift magnitude (with CI) and drift time per split and stance as MLflow
        metrics ``[<route>/]drift/<split>/<stance>/...`` at the last step, so runs sort and compare by drift
        in the UI (:func:`valuedrift.metrics.summary.drift_metrics`)."""
        ckpts = self.trajectory["checkpoints"]
        ends = phase_ends(ckpts)
        if ends is None:
            return {}
        start, end = (pd.DataFrame([obj for _, obj in iter_jsonl(self.run.eval_table(t))]) for t in ends)
        metrics = drift_metrics(ckpts, start, end, self.n_boot, self.ci, self.seed)
        if self.tracker is not None:
            self.tracker.log_metrics(self._prefixed(metrics), step=ends[1])
        return metrics

    def sync_mlflow(self) -> int:
        """Re-send what is on disk but not in MLflow (after a crash, e.g. between the disk write and the
        mirror): every missing (metric, step) of the trajectory and every missing per-probe table.
        Returns how many metric values were sent."""
        if self.tracker is None or not self.trajectory["checkpoints"]:
            return 0
        sent = self.tracker.sync_metrics({c["step"]: self._prefixed(self.record_metrics(c)) for c in self.trajectory["checkpoints"]})
        self.tracker.sync_artifacts(self.run.eval_tables(), self._artifact_dir(EVALS_DIR))
        return sent


class TrainLogCallback(TrainerCallback):
    """Mirror the trainer's numeric logs to MLflow as ``<prefix><name>`` at the global step (main process).

    After a resume the trainer repeats the steps between the last checkpoint and the interruption; a
    (metric, step) pair already in MLflow is not sent again, so every metric has each step at most once.
    """

    def __init__(self, tracker: Tracker | None, prefix: str = "train/"):
        self.tracker, self.prefix = tracker, prefix
        self._logged: dict[str, set[int]] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or self.tracker is None:
            return
        step = state.global_step
        numeric = {}
        for k, v in logs.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            key = f"{self.prefix}{k}"
            if key not in self._logged:
                self._logged[key] = self.tracker.logged_steps(key)
            if step not in self._logged[key]:
                numeric[key] = float(v)
                self._logged[key].add(step)
        if numeric:
            self.tracker.log_metrics(numeric, step=step)


@contextlib.contextmanager
def full_precision(model: Any) -> Iterator[None]:
    """Run ``model`` with its own forward while the block lasts: under mixed precision accelerate replaces a
    trained model's ``forward`` by an autocast-wrapped one (keeping the original as ``_original_forward``), so a
    live model scored during bf16 training would be scored in bf16. Scoring with the original forward measures
    the float32 weights exactly as a reload of the checkpoint does (and as step 0 was measured). A model
    without the wrapper is left as it is."""
    wrapped, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


class StanceTraceCallback(TrainerCallback):
    """Evaluate stances at step 0, every ``every`` steps, and at the end; log the training loss too.

    ``tracer`` is the run's main (likelihood) route; each of ``also`` (e.g. the judged route) is evaluated at
    the same checkpoints, right after it."""

    def __init__(self, tracer: StanceTracer, every: int, tracker: Tracker | None, also: list[StanceTracer] | None = None):
        self.tracer, self.every, self.tracker = tracer, every, tracker
        self.tracers = [tracer, *(also or [])]
        self.train_logs = TrainLogCallback(tracker, "train/")
        self.train_seconds_start = time.perf_counter()

    @property
    def eval_seconds(self) -> float:
        return sum(t.eval_seconds for t in self.tracers)

    @property
    def eval_seconds_by_route(self) -> dict[str, float]:
        """Scoring seconds of each route: ``likelihood`` (the main tracer) and each other by its name."""
        return {t.route or "likelihood": t.eval_seconds for t in self.tracers}

    def _evaluate(self, model: Any, step: int, phase: bool) -> None:
        with full_precision(model):  # mixed precision trains in autocast; stances are scored in the weights' precision
            for t in self.tracers:
                t.evaluate(model, step, phase=phase)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            for t in self.tracers:
                t.sync_mlflow()
            if state.global_step == 0:
                self._evaluate(model, 0, phase=True)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._evaluate(model, state.global_step, phase=False)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.train_logs.on_log(args, state, control, logs=logs, **kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._evaluate(model, state.global_step, phase=True)
