"""The one place that talks to MLflow.

Conventions (docs/definitions.md): tracking URI from ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``),
metrics step-indexed by the global training step, every run tagged with the git commit, the data.dvc and
dvc.lock hashes, the stage, the algorithm and a pipeline id shared by all runs of one ``dvc repro``.

Results are always written to disk first (trajectory JSON, per-probe tables); MLflow is a mirror.

- An HTTP tracking server that does not answer ``/health`` fails the stage before any training
  (:func:`check_reachable`, :class:`TrackingUnavailable`).
- If the server goes away mid-run, :class:`Tracker` stops mirroring after ``tracking.http_retries``
  retries, keeps training, and logs how to re-log the run from disk (``valuedrift relog <run dir>``).
- :meth:`Tracker.sync_metrics` / :meth:`Tracker.sync_artifacts` send only what MLflow does not hold yet
  (per metric key and step; per artifact path), so resuming and re-logging never duplicate a step.
- Each run directory records its MLflow run id (``mlflow_run_id``, the last one used) and how the run was
  opened (``mlflow_run.json``: name, experiment, tags, params, and its run id in every tracking store it
  was logged to), so a run is resumed, or re-created on another server, with the same identity.
- Params and tags pass through :func:`valuedrift.redaction.redact_mapping`: secrets never reach MLflow.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from valuedrift.config.schema.models import TrackingConfig
from valuedrift.core.io import file_digest, fingerprint, write_json
from valuedrift.core.redaction import redact, redact_mapping
from valuedrift.core.rundir import RunDir

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch call
HISTORY_QUERIES_IN_FLIGHT = 8
LOCALHOST = "127.0.0.1"


def dataset_source(info: dict[str, Any] | None, fallback: str) -> Any:
    """The MLflow dataset source of training data: for rows read from a hub dataset (``info`` =
    :attr:`valuedrift.data.sources.Loaded.info`) a ``HuggingFaceDatasetSource`` with its split, data_dir and
    revision; else ``info["path"]`` (a local source) or ``fallback`` (the built file) as a plain string."""
    if info is None:
        return fallback
    if info.get("hub"):
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        return HuggingFaceDatasetSource(path=info["path"], data_dir=info.get("data_dir"), split=info.get("split"),
                                        revision=info.get("revision"))
    return str(info.get("path") or fallback)


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (or stopped answering during a re-log)."""


def short_digest(path: Path) -> str | None:
    """The first 12 hex digits of a file's SHA-256 (:func:`valuedrift.core.io.file_digest`), None if absent."""
    return file_digest(path)[:12] if path.exists() else None


def git_commit(root: Path = Path(".")) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance_tags(root: Path = Path("."), params_file: Path = Path("params.yaml")) -> dict[str, str]:
    """Tags that identify code, data and pipeline state of a run.

    ``pipeline_id`` = hash(git commit, params.yaml, data.dvc): every stage of one ``dvc repro`` shares it.
    """
    tags = {
        "git_commit": git_commit(root) or "unknown",
        "data_dvc_sha": short_digest(root / "data.dvc") or "none",
        "dvc_lock_sha": short_digest(root / "dvc.lock") or "none",
    }
    tags["pipeline_id"] = fingerprint(tags["git_commit"], short_digest(root / params_file) or "", tags["data_dvc_sha"])[:12]
    return tags


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast, before any training, when an HTTP tracking server does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    shown = redact(uri)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - user-configured URI
            if resp.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server {shown} answered {resp.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        raise TrackingUnavailable(
            f"MLflow tracking server {shown} cannot be reached ({redact(str(e))}). Start it "
            f"(`valuedrift tracking-server` or `mlflow server --host {LOCALHOST}`), fix tracking.uri / "
            "MLFLOW_TRACKING_URI, or unset it to log to sqlite:///mlflow.db."
        ) from e


# what the user set before the project touched these variables (their values win over params)
_USER_HTTP_ENV = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}


def apply_http_settings(cfg: TrackingConfig) -> None:
    """Bound how long one MLflow HTTP call may stall training: ``tracking.http_retries`` retries of at most
    ``tracking.http_timeout_s`` each, unless the user set MLflow's own environment variables."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": cfg.http_retries, "MLFLOW_HTTP_REQUEST_TIMEOUT": cfg.http_timeout_s}
    for name, value in wanted.items():
        os.environ[name] = _USER_HTTP_ENV[name] or str(value)


@contextmanager
def _http_retries(n: int) -> Iterator[None]:
    old = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = old


def tracking_server_command(
    backend_store_uri: str, artifacts_destination: str | Path, port: int = 5000, host: str = LOCALHOST
) -> list[str]:
    """The ``mlflow server`` command line the project uses; it binds to 127.0.0.1 unless told otherwise."""
    import sys

    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts_destination),
        "--workers", "1",
    ]



MLFLOW_PARAM_CHARS = 500


def mlflow_params(params: dict[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: redacted first, then cut to 500 characters (cutting first could split
    a secret so that the redaction pattern no longer matches and its head reached the store)."""
    return {k: v[:MLFLOW_PARAM_CHARS] for k, v in redact_mapping(params).items()}

class Tracker:
    """An MLflow run that degrades to disk-only if the server disappears."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, uri: str | None = None):
        import mlflow

        self.mlflow = mlflow
        self.cfg = cfg
        self.uri = uri or cfg.resolved_uri()
        self.run_dir = Path(run_dir)
        self.run_id: str | None = None
        self.resumed = False
        self.failed: Exception | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @contextmanager
    def run(
        self,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any] | None = None,
        nested: bool = False,
        experiment: str | None = None,
    ) -> Iterator[Tracker]:
        """Open an MLflow run, or resume this directory's run if ``run_dir/mlflow_run_id`` exists and the
        store knows the run (recorded per store in ``mlflow_run.json``, or the id in that file).

        The run ends FINISHED, FAILED (the body raised) or KILLED (interrupted). If MLflow failed during the
        run, the body still runs to the end and an error says how to re-log from disk.
        """
        check_reachable(self.uri, self.cfg.check_timeout_s)
        apply_http_settings(self.cfg)
        experiment = experiment or self.cfg.experiment
        previous_uri = os.environ.get("MLFLOW_TRACKING_URI")  # mlflow.set_tracking_uri overwrites it
        self.mlflow.set_tracking_uri(self.uri)
        self.mlflow.set_experiment(experiment)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clean_tags, clean_params = redact_mapping(tags), mlflow_params(params or {})
        store = redact(self.uri)
        folder = RunDir(self.run_dir)
        run_ids: dict[str, str] = (folder.run_meta() or {}).get("run_ids", {})
        id_file = folder.run_id_file
        # no mlflow_run_id file = a new run (deleting it is how callers ask for one); otherwise the run this
        # directory has in this store, else the last run it used (if this store knows it)
        candidates = [run_ids.get(store), id_file.read_text().strip()] if id_file.exists() else []
        resume_id = next((c for c in candidates if c and self._run_exists(c)), None)
        if not resume_id and any(candidates):
            log.info("this run is not on %s yet: starting a new MLflow run", store)
        # a parent given as the mlflow.parentRunId tag (sweep trials) goes through start_run's parent_run_id
        parent = clean_tags.pop("mlflow.parentRunId", None)
        active = self.mlflow.start_run(run_id=resume_id, run_name=None if resume_id else run_name, nested=nested,
                                       parent_run_id=None if resume_id else parent)
        self.run_id, self.resumed = active.info.run_id, resume_id is not None
        id_file.write_text(self.run_id + "\n")
        write_json(folder.run_meta_file, {
            "run_name": run_name, "experiment": experiment, "tags": {**clean_tags, **({"mlflow.parentRunId": parent} if parent else {})},
            "params": clean_params,
            "run_ids": {**run_ids, store: self.run_id},  # one run per tracking store this run was logged to
        })
        self._safe(self.mlflow.set_tags, clean_tags)
        if clean_params and not resume_id:
            self._safe(self.mlflow.log_params, clean_params)
        status = "FINISHED"
        try:
            yield self
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            self._end(status)
            self.mlflow.set_tracking_uri(previous_uri)  # later runs in this process resolve the URI as before

    def _end(self, status: str) -> None:
        # a dead server gets one try only; fluent end_run pops the active run before it calls the server
        with _http_retries(0) if self.failed is not None else nullcontext():
            try:
                self.mlflow.end_run(status)
            except Exception as e:  # noqa: BLE001 - the run is over either way
                self.failed = self.failed or e
        if self.failed is not None:
            log.error(
                "MLflow logging stopped during this run (%s). Nothing on disk was lost: re-log with "
                "`valuedrift relog %s` once %s is back.",
                redact(str(self.failed)),
                self.run_dir,
                redact(self.uri),
            )

    def _run_exists(self, run_id: str) -> bool:
        try:
            self.client().get_run(run_id)
            return True
        except Exception:  # noqa: BLE001 - any lookup failure means: start a new run
            return False

    def client(self) -> Any:
        return self.mlflow.tracking.MlflowClient(self.uri)

    def _safe(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the server went away; keep training, results are on disk
            self.failed = e
            log.error(
                "MLflow call %s failed: %s; continuing without tracking (re-log later with `valuedrift relog %s`)",
                getattr(fn, "__name__", fn), redact(str(e)), self.run_dir,
            )
            return None

    # -- logging -----------------------------------------------------------------------------------
    def logged_steps(self, key: str) -> set[int]:
        """Steps at which ``key`` was already logged in this run (used to never log a step twice)."""
        if self.run_id is None or self.failed is not None:
            return set()
        hist = self._safe(self.client().get_metric_history, self.run_id, key) or []
        return {m.step for m in hist}

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None) -> None:
        """Metrics at ``step``; with ``model_id`` also linked to that logged model (a checkpoint)."""
        self._safe(self.mlflow.log_metrics, metrics, step=step, model_id=model_id)

    def checkpoint_model(self, name: str, step: int, tags: dict[str, str]) -> str | None:
        """An MLflow 3 logged model for the checkpoint at ``step`` of this run, without artifacts: the weights
        stay in the run folder and the DVC cache (``tags`` say where), so the UI's Models tab lists and ranks
        every checkpoint by the stance metrics logged against it. Returns its id (None when untracked)."""
        if self.run_id is None:
            return None
        model = self._safe(self.mlflow.create_external_model, name=name, source_run_id=self.run_id,
                           tags={**redact_mapping(tags), "step": str(step)}, model_type="checkpoint")
        return None if model is None else model.model_id

    def log_table(self, df: Any, artifact_file: str) -> None:
        """A table as an MLflow table artifact (shown, and searchable, in the run's Evaluation / artifacts view)."""
        self._safe(self.mlflow.log_table, df, artifact_file)

    def log_params(self, params: dict[str, Any]) -> None:
        self._safe(self.mlflow.log_params, mlflow_params(params))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._safe(self.mlflow.set_tags, redact_mapping(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._safe(self.mlflow.log_artifact, str(path), artifact_path)

    def log_input(self, df: Any, name: str, source: Any, context: str = "training") -> None:
        """Record a dataset (with its digest) as an input of the run; ``source`` is a path or URI string, or
        an MLflow dataset source (:func:`dataset_source`)."""
        ds = self.mlflow.data.from_pandas(df, source=source, name=name)
        self._safe(self.mlflow.log_input, ds, context=context)

    # -- re-sending what is on disk ------------------------------------------------------------------
    def sync_metrics(self, by_step: dict[int, dict[str, float]]) -> int:
        """Log every (key, step) of ``by_step`` that the run does not hold yet. Returns how many were sent.

        One history query per key decides what is missing, so a step is never logged twice.
        """
        from mlflow.entities import Metric

        if self.run_id is None or self.failed is not None or not by_step:
            return 0
        keys = sorted({k for metrics in by_step.values() for k in metrics})
        with ThreadPoolExecutor(HISTORY_QUERIES_IN_FLIGHT) as pool:  # latency-bound: overlap the requests
            have = dict(zip(keys, pool.map(self.logged_steps, keys), strict=True))
        now = int(time.time() * 1000)
        todo = [
            Metric(k, float(v), now, int(step))
            for step, metrics in sorted(by_step.items())
            for k, v in metrics.items()
            if int(step) not in have[k]
        ]
        for i in range(0, len(todo), MAX_BATCH):
            self._safe(self.client().log_batch, self.run_id, metrics=todo[i : i + MAX_BATCH])
        return len(todo) if self.failed is None else 0

    def sync_artifacts(self, files: Iterable[Path], artifact_path: str | None = None) -> int:
        """Upload each file not yet stored under ``artifact_path``. Returns how many were uploaded."""
        if self.run_id is None or self.failed is not None:
            return 0
        listed = self._safe(self.client().list_artifacts, self.run_id, artifact_path) or []
        stored = {Path(f.path).name for f in listed}
        sent = 0
        for f in files:
            if Path(f).name not in stored:
                self._safe(self.client().log_artifact, self.run_id, str(f), artifact_path)
                sent += self.failed is None
        return sent


@contextmanager
def fresh_run(cfg: TrackingConfig, out: Path, run_name: str, tags: dict[str, str], run_params: dict[str, Any]) -> Iterator[Tracker]:
    """A new MLflow run for one evaluation (never a resumed one), tagged with provenance and ``tags``.

    The run bookkeeping files are removed afterwards (nothing to resume), unless MLflow failed during
    the run, in which case they stay for ``valuedrift relog``.
    """
    bookkeeping = RunDir(out)
    bookkeeping.run_id_file.unlink(missing_ok=True)  # no id file = a new run
    tracker = Tracker(cfg, out)
    with tracker.run(run_name, {**provenance_tags(), **tags}, run_params):
        yield tracker
    if tracker.failed is None:
        bookkeeping.forget_mlflow_run()
