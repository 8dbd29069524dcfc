"""The tracking-server path, against a real ``mlflow server`` process on 127.0.0.1 started by the test.

- the SFT stage logs to the server; the server binds to 127.0.0.1 only;
- a tracking URI that cannot be reached (nothing listening, or a server that never answers) fails with a
  clear message before training;
- the server dying mid-run (SIGKILL during training) loses no training: the stage finishes, results are on
  disk, the error says to run ``valuedrift relog <run dir>``; after a restart, ``valuedrift relog`` fills in
  exactly the missing steps (each checkpoint once), and re-logging again sends nothing; re-logging to a
  store that has never seen the run re-creates it with its name, tags and params.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import mlflow
import pytest

from valuedrift import cli
from valuedrift.core.rundir import TRAJECTORY_FILE, RunDir
from valuedrift.tracking import TrackingUnavailable, check_reachable
from valuedrift.train.tracing import StanceTracer

from .conftest import ROOT, fresh_mlflow_uri
from .reliability_helpers import (
    CORPUS,
    MLflowServer,
    closed_port,
    listening_addresses,
    prepare_processed,
    reliability_params,
    sft_args,
    wait_for,
    write_params,
)
from .training_hold import Hold


@pytest.fixture(scope="module")
def server(tmp_path_factory, empty_mlflow_db):
    srv = MLflowServer(tmp_path_factory.mktemp("mlflow_server"), empty_store=empty_mlflow_db).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("reliability_server")
    params_file = write_params(root / "params.yaml", reliability_params(tiny_model_dir, max_steps=3))
    return params_file, prepare_processed(params_file, root / "processed")


def test_the_server_binds_to_loopback_only(server):
    assert listening_addresses(server.port) == {"0100007F"}, "mlflow server listens beyond 127.0.0.1"


@pytest.fixture()
def refused_port():
    """Nothing listens there, and nothing can start to while the test runs."""
    with closed_port() as port:
        yield port


def test_unreachable_tracking_uri_fails_before_training(
    setup, tiny_model_dir, tmp_path, monkeypatch, capsys, refused_port
):
    params_file, processed = setup
    uri = f"http://127.0.0.1:{refused_port}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(ROOT)
    t0 = time.perf_counter()
    rc = cli.main(sft_args(params_file, tiny_model_dir, processed, tmp_path / "runs"))
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{uri} cannot be reached" in err and "valuedrift tracking-server" in err and "MLFLOW_TRACKING_URI" in err
    assert not (tmp_path / "runs").exists(), "the stage started before noticing the tracking server is down"
    assert elapsed < 30, f"took {elapsed:.1f}s to notice"

    # a real process: it fails before importing torch, so no model can have been loaded
    code = ("import sys; from valuedrift.cli import main; "
            f"rc = main({sft_args(params_file, tiny_model_dir, processed, tmp_path / 'runs')!r}); "
            "print('RESULT', rc, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert "RESULT 2 False" in proc.stdout, proc.stdout + proc.stderr


def test_a_server_that_never_answers_fails_within_the_timeout():
    with socket.socket() as hung:  # accepts TCP connections (backlog) but never replies
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        t0 = time.perf_counter()
        with pytest.raises(TrackingUnavailable, match="cannot be reached"):
            check_reachable(f"http://127.0.0.1:{hung.getsockname()[1]}", timeout_s=1.0)
        assert time.perf_counter() - t0 < 10


def expected_metrics(run_dir) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for c in RunDir(run_dir).checkpoint_records():
        for key, value in StanceTracer.record_metrics(c).items():
            out.setdefault(key, {})[c["step"]] = value
    return out


def assert_each_checkpoint_once(client, run_id: str, run_dir) -> None:
    for key, by_step in expected_metrics(run_dir).items():
        hist = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in hist) == sorted(by_step), f"{key}: {sorted(m.step for m in hist)}"
        assert all(math.isclose(m.value, by_step[m.step], abs_tol=1e-9) for m in hist)
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2, 3]
    tables = {a.path for a in client.list_artifacts(run_id, "evals")}
    assert tables == {f"evals/step_{s:06d}.jsonl" for s in (0, 1, 2, 3)}


def test_server_death_mid_run_loses_nothing_and_relog_fills_the_gap(
    server, setup, tiny_model_dir, tmp_path, monkeypatch, caplog, capsys, empty_mlflow_db
):
    params_file, processed = setup
    out = tmp_path / "runs" / "sft"
    run_dir = out / CORPUS
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.chdir(ROOT)
    caplog.set_level("INFO")

    # training holds before step 2 (checkpoint-1 and its metrics sent) until the server is dead: the server
    # always dies in the middle of training
    hold = Hold(tmp_path / "hold", step=1)
    hold.install(monkeypatch)
    killed_at: list[float] = []

    def kill_while_held() -> None:
        try:
            wait_for(hold.is_held, 300, "training to reach step 2")
            server.kill()
            killed_at.append(time.time())
        finally:
            hold.release()

    killer = threading.Thread(target=kill_while_held, daemon=True)
    killer.start()
    assert cli.main(sft_args(params_file, tiny_model_dir, processed, out)) == 0  # training finished
    killer.join(timeout=60)
    assert killed_at and killed_at[0] < (run_dir / "final" / "model.safetensors").stat().st_mtime, \
        "the server was not killed during training"

    # nothing lost on disk, and the error says how to re-log
    assert [c["step"] for c in RunDir(run_dir).checkpoint_records()] == [0, 1, 2, 3]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"valuedrift relog {run_dir}" in m for m in errors), errors

    # the server comes back (same store): the run is there, with a gap where the server was down
    server.start()
    client = mlflow.tracking.MlflowClient(server.uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.data.tags["stage"] == "sft" and run.data.params, "the live run did not reach the server"
    before = sorted(m.step for m in client.get_metric_history(run_id, "stance/all/support"))
    assert 0 in before and 3 not in before, f"steps on the server before relog: {before}"

    # relog fills exactly the gap
    capsys.readouterr()
    assert cli.main(["relog", str(run_dir), "--params", str(params_file)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["run_id"] == run_id and first["resumed"] and first["metric_values_sent"] > 0
    assert_each_checkpoint_once(client, run_id, run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["relogged"] == "true"

    # a store that never saw the run: relog re-creates it with the recorded name, tags and params
    other = fresh_mlflow_uri(tmp_path / "other", empty_mlflow_db)
    assert cli.main(["relog", str(run_dir), "--params", str(params_file), "--uri", other]) == 0
    new = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not new["resumed"] and new["run_id"] != run_id
    other_client = mlflow.tracking.MlflowClient(other)
    copy = other_client.get_run(new["run_id"])
    assert copy.info.run_name == run.info.run_name and copy.data.params == run.data.params
    assert copy.data.tags["git_commit"] == run.data.tags["git_commit"]
    assert_each_checkpoint_once(other_client, new["run_id"], run_dir)
    # ... the run directory still knows its run on the first server, and a second relog there sends nothing
    assert cli.main(["relog", str(run_dir), "--params", str(params_file)]) == 0
    back = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert back["run_id"] == run_id and back["resumed"]
    assert back["metric_values_sent"] == 0 and back["tables_sent"] == 0
    assert_each_checkpoint_once(client, run_id, run_dir)


def test_relog_fails_clearly_when_the_server_is_down_or_the_folder_is_no_run(
    setup, tmp_path, capsys, refused_port
):
    params_file, _ = setup
    (tmp_path / "empty").mkdir()
    assert cli.main(["relog", str(tmp_path / "empty"), "--params", str(params_file)]) == 2
    assert "trajectory.json" in capsys.readouterr().err
    (tmp_path / "empty" / TRAJECTORY_FILE).write_text('{"checkpoints": []}')
    assert cli.main(["relog", str(tmp_path / "empty"), "--uri", f"http://127.0.0.1:{refused_port}"]) == 2
    assert "cannot be reached" in capsys.readouterr().err
