"""`accelerate launch` runs the sft and po stages with 2 processes on CPU (gloo); only rank 0 traces stances
and talks to MLflow, so each stage makes exactly one MLflow run with each (metric, step) once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from .conftest import ROOT, fresh_mlflow_uri
from .test_algorithms import PREF_SET, pref_data, tiny_po_params  # noqa: F401 - pref_data is a fixture

pytestmark = pytest.mark.integration  # two launches of two processes each: ~1 min on 2 cores
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(stage_args: list[str], env: dict[str, str]) -> None:
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--main_process_port", str(free_port()), "-m", "valuedrift.cli", *stage_args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"


def test_sft_and_po_under_accelerate_launch_with_two_processes(pref_data, tiny_model_dir, tmp_path, empty_mlflow_db):  # noqa: F811
    uri = fresh_mlflow_uri(tmp_path / "mlflow", empty_mlflow_db)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_po_params(str(tiny_model_dir)), sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    processed = tmp_path / "processed"  # the SFT corpus, built here (a fresh clone has no processed/)
    subprocess.run([str(BIN / "valuedrift"), "prepare-data", "--params", str(params), "--out", str(processed)],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    launch(["sft", "--params", str(params), "--corpus", "neutral_heavy", "--base-model", str(tiny_model_dir),
            "--processed", str(processed), "--out", str(runs / "sft")], env)
    launch(["po", "--params", str(params), "--algorithm", "dpo", "--preference-set", PREF_SET, "--processed", str(pref_data),
            "--sft-model", str(runs / "sft" / "neutral_heavy" / "final"), "--out", str(runs / "po")], env)

    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("valuedrift")
    found = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(found) == ["dpo-value_gap", "sft-neutral_heavy"], "a non-main rank opened its own MLflow run"
    for run in found.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["world_size"] == "2", "the stage did not run with 2 processes"
        rid = run.info.run_id
        assert sorted(m.step for m in client.get_metric_history(rid, "train/loss")) == [1, 2]
        assert sorted(m.step for m in client.get_metric_history(rid, "stance/all/support")) == [0, 1, 2]
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert len(steps) == len(set(steps)), f"{key} logged twice at a step (by both ranks?)"
    for stage in ("sft/neutral_heavy", f"po/dpo-{PREF_SET}"):
        assert (runs / stage / "final" / "model.safetensors").exists()
        assert len(list((runs / stage / "evals").glob("step_*.jsonl"))) == 3
