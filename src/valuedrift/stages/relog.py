"""``valuedrift relog <run dir>…``: re-send a run's results from disk to MLflow, without duplicates.

The run directory is the source of truth (docs/definitions.md); MLflow mirrors it. After the tracking server went
away mid-run (the stage logged ``re-log with `valuedrift relog <run dir>```), or to copy a run to another
server, this command

1. opens the run recorded in ``<run dir>/mlflow_run_id`` if the server knows it, otherwise a new run
   with the recorded name, experiment, tags and params (``mlflow_run.json``), and stores its id;
2. sends every checkpoint of ``trajectory.json`` (the ``stance/…``, ``phase/stance/…`` and extra metrics,
   at the checkpoint's global step) and the trainer's logged history (``train/…``, from the last
   checkpoint's ``trainer_state.json``) — only the (metric, step) pairs MLflow does not hold yet;
3. uploads the per-checkpoint per-probe tables (``evals/step_*.jsonl``) not yet stored, and
   ``trajectory.json``.

Running it twice sends nothing the second time.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from valuedrift.config.load import load_params
from valuedrift.config.schema.models import TrackingConfig
from valuedrift.core.errors import DataError
from valuedrift.core.rundir import EVALS_DIR, TRAINER_STATE, RunDir
from valuedrift.stages.args import check_path
from valuedrift.tracking import Tracker, TrackingUnavailable
from valuedrift.train.tracing import StanceTracer

log = logging.getLogger(__name__)

TRAIN_PREFIX = "train/"  # as logged live by train.tracing.TrainLogCallback


def trainer_history(run_dir: Path) -> dict[int, dict[str, float]]:
    """``train/<name>`` metrics per step: from ``train_log.json`` of a finished run (its checkpoints are
    dropped), else from the last complete checkpoint's ``trainer_state.json``."""
    run = RunDir(run_dir)
    ckpt = run.last_checkpoint()
    if run.train_log.exists():
        state_file = run.train_log
    elif ckpt is not None:
        state_file = ckpt / TRAINER_STATE
    else:
        return {}
    try:
        history = json.loads(state_file.read_text())["log_history"]
    except (json.JSONDecodeError, KeyError) as e:
        raise DataError(state_file, None, f"not a trainer state with a log_history ({e})") from e
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for entry in history:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for k, v in entry.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                out[step][f"{TRAIN_PREFIX}{k}"] = float(v)
    return dict(out)


def trajectory_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """The metrics of every checkpoint in ``trajectory.json``, exactly as the tracer logged them live."""
    run = RunDir(run_dir)
    path = run.trajectory_file
    if not path.exists():
        raise DataError(path, None, "no trajectory: is this a run directory (runs/sft/<corpus>, runs/po/<name>)?")
    try:
        checkpoints = run.checkpoint_records()
        return {int(c["step"]): StanceTracer.record_metrics(c) for c in checkpoints}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(path, None, f"malformed trajectory ({e})") from e


def relog(run_dir: Path, cfg: TrackingConfig, uri: str | None = None) -> dict[str, Any]:
    """Re-send one run directory; returns what was sent. Raises TrackingUnavailable if MLflow fails."""
    run_dir = Path(run_dir)
    metrics = trajectory_metrics(run_dir)
    for step, train in trainer_history(run_dir).items():
        metrics[step] = {**train, **metrics.get(step, {})}
    run = RunDir(run_dir)
    meta = run.run_meta() or {
        "run_name": f"{run_dir.parent.name}-{run_dir.name}", "experiment": None,
        "tags": {"stage": run_dir.parent.name}, "params": {},
    }
    tracker = Tracker(cfg, run_dir, uri=uri)
    with tracker.run(meta["run_name"], {**meta["tags"], "relogged": "true"}, meta["params"], experiment=meta.get("experiment")):
        sent_metrics = tracker.sync_metrics(metrics)
        sent_tables = tracker.sync_artifacts(run.eval_tables(), EVALS_DIR)
        tracker.log_artifact(run.trajectory_file)
    if tracker.failed is not None:
        raise TrackingUnavailable(f"MLflow failed while re-logging {run_dir}: {tracker.failed}; run the command again")
    summary = {"run_dir": str(run_dir), "run_id": tracker.run_id, "resumed": tracker.resumed,
               "checkpoints": len(metrics), "metric_values_sent": sent_metrics, "tables_sent": sent_tables}
    log.info("relog %s -> run %s (%s): %d metric values and %d tables sent", run_dir, tracker.run_id,
             "existing" if tracker.resumed else "new", sent_metrics, sent_tables)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift relog", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="e.g. runs/sft/neutral_heavy")
    ap.add_argument("--params", default="params.yaml", help="read tracking.* from here (defaults if absent)")
    ap.add_argument("--uri", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI, then tracking.uri)")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file", must_exist=False)
    for run_dir in a.run_dirs:
        if not run_dir.exists():
            raise DataError(run_dir, None, "RUN_DIR argument: run directory not found")
        check_path("RUN_DIR", run_dir, "dir")
    cfg = load_params(a.params).tracking if Path(a.params).exists() else TrackingConfig()
    for run_dir in a.run_dirs:
        print(json.dumps(relog(run_dir, cfg, a.uri)))
