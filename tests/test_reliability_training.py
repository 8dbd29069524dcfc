"""Interruption and determinism of the SFT stage, on the tiny random model with real TRL and MLflow.

- kill -9 in the middle of ``valuedrift sft`` (a real subprocess, killed once its first checkpoint is on
  disk), then rerun the stage: it resumes from the last checkpoint, MLflow holds each checkpoint's metrics
  exactly once (in the same MLflow run), and the trajectory JSON is complete;
- the same seed twice gives identical stance scores, trajectories and drift tables (within 1e-6).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from valuedrift import cli
from valuedrift.core.rundir import TRAJECTORY_FILE
from valuedrift.stages import drift as drift_stage
from valuedrift.train.tracing import StanceTracer

from .conftest import ROOT, fresh_mlflow_uri
from .reliability_helpers import (
    CORPUS,
    prepare_processed,
    reliability_params,
    sft_args,
    wait_for,
    write_params,
)
from .training_hold import Hold

TOL = 1e-6


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, empty_mlflow_db):
    """Params, prepared corpora and an empty MLflow store (to copy) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("reliability_training")
    params_file = write_params(root / "params.yaml", reliability_params(tiny_model_dir, max_steps=3))
    processed = prepare_processed(params_file, root / "processed")
    return params_file, processed, empty_mlflow_db


def trajectory(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / TRAJECTORY_FILE).read_text())["checkpoints"]


def test_kill_minus_9_then_rerun_resumes_and_logs_each_checkpoint_once(setup, tiny_model_dir, tmp_path, monkeypatch, caplog):
    params_file, processed, template = setup
    uri = fresh_mlflow_uri(tmp_path / "store", template)
    out = tmp_path / "runs" / "sft"
    run_dir = out / CORPUS
    args = sft_args(params_file, tiny_model_dir, processed, out)

    # 1. a real `valuedrift sft` process, held before step 2 (checkpoint-1 complete on disk) and killed
    #    there with SIGKILL: the kill always lands in the middle of training
    hold = Hold(tmp_path / "hold", step=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.training_hold", *args], cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, **hold.env()},
        stdout=(tmp_path / "killed.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(hold.is_held, 300, "training to reach step 2", alive=lambda: proc.poll() is None)
        assert (run_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (run_dir / "final").exists(), "the run finished before it was killed"
    before = {c["step"]: c for c in trajectory(run_dir)}
    assert 0 in before and 1 in before

    # 2. rerun the stage (same command, in-process): it resumes from the last checkpoint
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(ROOT)
    caplog.set_level("INFO")
    assert cli.main(args) == 0
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from ")]
    assert resumed and "checkpoint-" in resumed[0], "the rerun did not resume from a checkpoint"
    assert (run_dir / "final" / "model.safetensors").exists()

    # the trajectory is complete: step 0, every step, the end; earlier records kept, not re-scored
    ckpts = trajectory(run_dir)
    assert [c["step"] for c in ckpts] == [0, 1, 2, 3]
    assert [c["phase"] for c in ckpts] == [True, False, False, True]
    for c in ckpts:
        assert (run_dir / "evals" / f"step_{c['step']:06d}.jsonl").exists()
        if c["step"] in before:
            assert c == before[c["step"]]

    # MLflow: one run (resumed, not a second one), every checkpoint metric exactly once, equal to disk
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("valuedrift").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    assert (run_dir / "mlflow_run_id").read_text().strip() == run_id
    expected: dict[str, dict[int, float]] = {}
    for c in ckpts:
        for key, value in StanceTracer.record_metrics(c).items():
            expected.setdefault(key, {})[c["step"]] = value
    assert "stance/all/support" in expected and "phase/stance/all/support" in expected
    for key, by_step in expected.items():
        hist = client.get_metric_history(run_id, key)
        steps = sorted(m.step for m in hist)
        assert steps == sorted(by_step), f"{key}: logged at steps {steps}, on disk {sorted(by_step)}"
        for m in hist:
            assert math.isclose(m.value, by_step[m.step], abs_tol=1e-9)
    loss_steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert loss_steps == [1, 2, 3], f"train/loss steps {loss_steps}: a step was lost or logged twice"
    tables = {a.path for a in client.list_artifacts(run_id, "evals")}
    assert {f"evals/step_{s:06d}.jsonl" for s in (0, 1, 2, 3)} <= tables


def run_once(setup, tiny_model_dir, root: Path, uri: str, monkeypatch) -> Path:
    params_file, processed, _ = setup
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(ROOT)
    root.mkdir(parents=True)
    p2 = write_params(root / "params.yaml", reliability_params(tiny_model_dir, max_steps=2))
    assert cli.main(sft_args(p2, tiny_model_dir, processed, root / "runs" / "sft")) == 0
    drift_stage.main(["--params", str(p2), "--runs", str(root / "runs"), "--metrics", str(root / "metrics"),
                      "--plots", str(root / "plots")])
    return root


def assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b), what
    for col in a.columns:
        if pd.api.types.is_numeric_dtype(a[col]):
            diff = (a[col] - b[col]).abs().max()
            assert not diff > TOL, f"{what}: column {col} differs by {diff}"
        else:
            assert a[col].tolist() == b[col].tolist(), f"{what}: column {col} differs"


def test_same_seed_twice_gives_identical_stance_scores_and_drift_tables(setup, tiny_model_dir, tmp_path, monkeypatch):
    _, _, template = setup
    uri = fresh_mlflow_uri(tmp_path / "store", template)
    a = run_once(setup, tiny_model_dir, tmp_path / "a", uri, monkeypatch)
    b = run_once(setup, tiny_model_dir, tmp_path / "b", uri, monkeypatch)

    run_a, run_b = a / "runs" / "sft" / CORPUS, b / "runs" / "sft" / CORPUS
    steps = [c["step"] for c in trajectory(run_a)]
    assert steps == [c["step"] for c in trajectory(run_b)] == [0, 1, 2]
    for s in steps:  # per-probe stance scores at every checkpoint
        name = f"evals/step_{s:06d}.jsonl"
        assert_frames_equal(pd.read_json(run_a / name, lines=True), pd.read_json(run_b / name, lines=True), name)
    for ca, cb in zip(trajectory(run_a), trajectory(run_b), strict=True):  # value vectors and CIs
        assert_frames_equal(pd.DataFrame(ca["trace"]), pd.DataFrame(cb["trace"]), f"trace vectors at {ca['step']}")
    for table in ("drift_table.csv", "drift_summary.csv"):
        assert_frames_equal(pd.read_csv(a / "metrics" / table), pd.read_csv(b / "metrics" / table), table)
    # the scores moved during training, so "identical" is not "nothing happened"
    first, last = (pd.read_json(run_a / f"evals/step_{s:06d}.jsonl", lines=True) for s in (0, 2))
    assert (first["ll_support"] - last["ll_support"]).abs().max() > 1e-6
