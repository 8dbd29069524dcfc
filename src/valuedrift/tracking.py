"""The one place that talks to MLflow.

Conventions (DESIGN.md): tracking URI from ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``),
metrics step-indexed by the global training step, every run tagged with the git commit, the data.dvc and
dvc.lock hashes, the stage, the algorithm and a pipeline id shared by all runs of one ``dvc repro``.

Results are always written to disk first (trajectory JSON, per-probe tables); MLflow is a mirror. If the
tracking server goes away mid-run, :class:`Tracker` stops mirroring, keeps training, and tells the user
how to re-log the run from disk (``valuedrift relog <run dir>``).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from valuedrift.config import TrackingConfig

log = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else None


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
        "data_dvc_sha": _sha(root / "data.dvc") or "none",
        "dvc_lock_sha": _sha(root / "dvc.lock") or "none",
    }
    h = hashlib.sha256()
    for part in (tags["git_commit"], _sha(root / params_file) or "", tags["data_dvc_sha"]):
        h.update(part.encode())
    tags["pipeline_id"] = h.hexdigest()[:12]
    return tags


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast, before any training, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - user-configured URI
            if resp.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server {uri} answered {resp.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} cannot be reached ({e}). Start it (`mlflow server --host 127.0.0.1`), "
            "fix tracking.uri / MLFLOW_TRACKING_URI, or unset it to log to sqlite:///mlflow.db."
        ) from e


class Tracker:
    """An MLflow run that degrades to disk-only if the server disappears."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path):
        import mlflow

        self.mlflow = mlflow
        self.cfg = cfg
        self.uri = cfg.resolved_uri()
        self.run_dir = Path(run_dir)
        self.run_id: str | None = None
        self.failed: Exception | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @contextmanager
    def run(self, run_name: str, tags: dict[str, str], params: dict[str, Any] | None = None, nested: bool = False) -> Iterator[Tracker]:
        """Open (or resume, if ``run_dir/mlflow_run_id`` exists) an MLflow run."""
        check_reachable(self.uri, self.cfg.check_timeout_s)
        self.mlflow.set_tracking_uri(self.uri)
        self.mlflow.set_experiment(self.cfg.experiment)
        id_file = self.run_dir / "mlflow_run_id"
        resume_id = id_file.read_text().strip() if id_file.exists() else None
        if resume_id and not self._run_exists(resume_id):
            resume_id = None
        with self.mlflow.start_run(run_id=resume_id, run_name=None if resume_id else run_name, nested=nested) as active:
            self.run_id = active.info.run_id
            self.run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id + "\n")
            self._safe(self.mlflow.set_tags, tags)
            if params and not resume_id:
                self._safe(self.mlflow.log_params, {k: str(v)[:500] for k, v in params.items()})
            try:
                yield self
            finally:
                if self.failed is not None:
                    log.error(
                        "MLflow logging stopped during this run (%s). Nothing on disk was lost: re-log with "
                        "`valuedrift relog %s` once %s is back.",
                        self.failed,
                        self.run_dir,
                        self.uri,
                    )

    def _run_exists(self, run_id: str) -> bool:
        try:
            self.mlflow.tracking.MlflowClient(self.uri).get_run(run_id)
            return True
        except Exception:  # noqa: BLE001 - any lookup failure means: start a new run
            return False

    def _safe(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the server went away; keep training, results are on disk
            self.failed = e
            log.error("MLflow call %s failed: %s; continuing without tracking", getattr(fn, "__name__", fn), e)
            return None

    # -- logging -----------------------------------------------------------------------------------
    def logged_steps(self, key: str) -> set[int]:
        """Steps at which ``key`` was already logged in this run (used to never log a step twice)."""
        if self.run_id is None or self.failed is not None:
            return set()
        client = self.mlflow.tracking.MlflowClient(self.uri)
        hist = self._safe(client.get_metric_history, self.run_id, key) or []
        return {m.step for m in hist}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._safe(self.mlflow.log_metrics, metrics, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        self._safe(self.mlflow.log_params, {k: str(v)[:500] for k, v in params.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._safe(self.mlflow.set_tags, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._safe(self.mlflow.log_artifact, str(path), artifact_path)

    def log_input(self, df: Any, name: str, source: str, context: str = "training") -> None:
        """Record a dataset (with its digest) as an input of the run."""
        ds = self.mlflow.data.from_pandas(df, source=source, name=name)
        self._safe(self.mlflow.log_input, ds, context=context)
