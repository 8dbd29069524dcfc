"""The scale-out setups of the README on a real PostgreSQL (issue 18 item 3), on the tiny random model:

- two sweep worker processes on one PostgreSQL Optuna storage finish the study, each trial run once;
- a worker killed with SIGKILL in the middle of a trial: its trial is found by its heartbeat (the rerun
  plays a worker on another machine, so the same-host "process is gone" shortcut cannot see it) and
  retried with the same parameters;
- an ``mlflow server`` (the project's command line) with a PostgreSQL backend store receives a traced SFT
  run whose metric history is read back, equal to the run folder on disk.

The server is ``make pg`` (127.0.0.1, a ``postgresql+psycopg2://`` URL in ``.pg/url`` or ``$VALUEDRIFT_TEST_PG_URL``; ``.ci/run`` calls it
before the tests); when neither is there the fixture runs ``make pg`` itself. Each test gets a database of
its own. The tests skip, with make pg's reason, only when PostgreSQL cannot be installed or started.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import mlflow
import optuna
import pytest

from valuedrift import cli
from valuedrift.core.rundir import RunDir
from valuedrift.tune.storage import count_trials

from .conftest import ROOT
from .reliability_helpers import (
    CORPUS,
    MLflowServer,
    prepare_processed,
    reliability_params,
    sft_args,
    write_params,
)
from .test_reliability_server import expected_metrics
from .test_sweep import stop, sweep_argv, sweep_params, trial_runs, wait_for, worker_process
from .test_sweep import write_params as write_sweep_params
from .training_hold import Hold

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) is needed for PostgreSQL")

PG_DIR = ROOT / ".pg"
URL_ENV = "VALUEDRIFT_TEST_PG_URL"


def _server_url() -> str | None:
    url = os.environ.get(URL_ENV, "").strip()
    if not url and (PG_DIR / "url").exists():
        url = (PG_DIR / "url").read_text().strip()
    return url or None


def dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy URL (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def _connects(url: str) -> bool:
    try:
        psycopg2.connect(dsn(url), connect_timeout=5).close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of a running PostgreSQL (``make pg`` is run when none answers)."""
    url = _server_url()
    if url is None or not _connects(url):
        proc = subprocess.run(["make", "-s", "pg"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        url = _server_url()
        if url is None:
            reason = (PG_DIR / "unavailable").read_text().strip() if (PG_DIR / "unavailable").exists() else proc.stderr[-500:]
            pytest.skip(f"PostgreSQL cannot be installed or started here: {reason}")
        assert _connects(url), f"make pg reported {url}, but it does not answer:\n{proc.stdout}\n{proc.stderr}"
    return url


@pytest.fixture()
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server (dropped afterwards)."""
    name = f"vd_{uuid.uuid4().hex[:10]}"
    admin = dsn(pg_server).rsplit("/", 1)[0] + "/postgres"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


# --------------------------------------------------------------------------------------------------
# Optuna on PostgreSQL
# --------------------------------------------------------------------------------------------------


def test_workers_starting_at_once_on_an_empty_database_all_connect(pg_url):
    """Several workers opening the study storage of an empty database at once all race to create Optuna's
    schema; on PostgreSQL the losers used to die with a duplicate-type IntegrityError (2 of 12 processes
    here, measured). make_storage connects again once the schema exists."""
    code = f"from valuedrift.tune.storage import make_storage; make_storage({pg_url!r}, 30, None)"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(e[-1500:] for e in errors if e)


def test_two_worker_processes_on_postgresql_run_each_trial_once(tmp_path, mlflow_uri, monkeypatch, tiny_model_dir, pg_url):
    monkeypatch.chdir(ROOT)
    p = sweep_params(tiny_model_dir, pg_url, study="pg-par", n_trials=3, sampler="random", pruner="none",
                     space={"learning_rate": {"low": 1e-6, "high": 1e-2, "log": True}}, hparams={})
    params = write_sweep_params(tmp_path, p)
    # each worker stops at the start of its first trial; once both are held, each has a RUNNING trial of
    # its own, so both run trials whatever the machine's load (no race on who gets there first)
    holds = [Hold(tmp_path / "hold0", step=0), Hold(tmp_path / "hold1", step=0)]
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    procs = [worker_process(params, tiny_model_dir, tmp_path, k, logs[k], holds[k]) for k in (0, 1)]
    try:
        deadline = time.monotonic() + 240
        while not (holds[0].is_held() and holds[1].is_held()):
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, f"a worker exited with {proc.returncode} first:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out:\n" + "\n".join(log.read_text()[-1500:] for log in logs)
            time.sleep(0.5)
        for h in holds:
            h.release()
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        for h in holds:
            h.release()
        for proc in procs:
            stop(proc)

    study = optuna.load_study(study_name="pg-par", storage=pg_url)
    trials = study.trials  # 3, or 4 if both workers started a last trial at the same instant
    assert len(trials) >= 3 and all(t.state.name == "COMPLETE" for t in trials), [t.state.name for t in trials]
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {procs[0].pid, procs[1].pid}, "both workers must run trials"
    assert len({t.params["learning_rate"] for t in trials}) == len(trials), "the two samplers proposed the same point"
    runs = sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs(mlflow_uri, "pg-par"))
    assert runs == [t.number for t in trials], "a trial ran twice or not at all"
    dirs = sorted(d.name for d in (tmp_path / "tune" / "work" / "pg-par" / "trials").iterdir())
    assert dirs == [f"{t.number:04d}" for t in trials]


def test_killed_worker_on_postgresql_is_found_by_its_heartbeat_and_retried(
    tmp_path, mlflow_uri, monkeypatch, tiny_model_dir, pg_url, one_thread
):
    monkeypatch.chdir(ROOT)
    heartbeat_s = 1  # a RUNNING trial silent for 2 s is stale
    p = sweep_params(tiny_model_dir, pg_url, study="pg-hb", n_trials=1, sampler="grid", pruner="none", heartbeat_s=heartbeat_s,
                     space={"learning_rate": {"choices": [1e-6, 1e-2]}}, hparams={})
    params = write_sweep_params(tmp_path, p)
    log = tmp_path / "worker.log"
    hold = Hold(tmp_path / "hold", step=1)  # trial 0 stops after its first step, its heartbeat thread beating
    proc = worker_process(params, tiny_model_dir, tmp_path, 0, log, hold)
    try:
        wait_for(hold.is_held, proc, log)
        time.sleep(2 * heartbeat_s + 1)  # longer than the grace period: a live worker keeps beating
        storage = optuna.storages.RDBStorage(pg_url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s)
        study = optuna.load_study(study_name="pg-hb", storage=storage)
        [t] = study.trials
        assert t.state.name == "RUNNING"
        assert storage._get_stale_trial_ids(study._study_id) == [], "a live worker's trial looks stale"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    killed = optuna.load_study(study_name="pg-hb", storage=pg_url).trials[0]
    assert killed.state.name == "RUNNING"  # nobody has noticed yet
    time.sleep(2 * heartbeat_s + 1)
    storage = optuna.storages.RDBStorage(pg_url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s)
    assert storage._get_stale_trial_ids(optuna.load_study(study_name="pg-hb", storage=storage)._study_id) == [killed._trial_id]

    # the rerun is a worker on another machine: it cannot see that the process is gone, only the heartbeat.
    # The study already "holds" n_trials = 1 (the stale RUNNING trial): the worker must fail stale trials
    # before it counts, or it would stop without retrying (docs/reliability.md)
    monkeypatch.setattr(socket, "gethostname", lambda: "another-machine")
    assert cli.main(sweep_argv(params, tiny_model_dir, tmp_path, "--no-outputs")) == 0
    study = optuna.load_study(study_name="pg-hb", storage=pg_url)
    after = {t.number: t for t in study.trials}
    assert after[0].state.name == "FAIL" and "error" not in after[0].user_attrs  # interrupted, not an error
    retries = [t for t in after.values() if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state.name == "COMPLETE"
    assert retries[0].user_attrs["worker"]["host"] == "another-machine"
    c = count_trials(study)
    assert (c.complete, c.interrupted, c.running) == (1, 1, 0)
    assert [t.params for t in study.trials if t.state.name == "COMPLETE"] == [killed.params]
    runs = {r.data.tags["optuna.trial"]: r for r in trial_runs(mlflow_uri, "pg-hb")}
    assert runs["0"].data.tags.get("optuna.interrupted") == "true" and runs["0"].info.status == "FAILED"


# --------------------------------------------------------------------------------------------------
# An MLflow server on PostgreSQL
# --------------------------------------------------------------------------------------------------


def test_mlflow_server_on_postgresql_stores_a_traced_run(tmp_path, monkeypatch, tiny_model_dir, pg_url):
    server = MLflowServer(tmp_path, backend=pg_url).start()
    try:
        params_file = write_params(tmp_path / "params.yaml", reliability_params(tiny_model_dir, max_steps=2))
        processed = prepare_processed(params_file, tmp_path / "processed")
        out = tmp_path / "runs" / "sft"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.chdir(ROOT)
        assert cli.main(sft_args(params_file, tiny_model_dir, processed, out)) == 0

        run_dir = out / CORPUS
        run_id = RunDir(run_dir).run_id()
        client = mlflow.tracking.MlflowClient(server.uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["stage"] == "sft"
        expected = expected_metrics(run_dir)
        assert expected, "the run folder holds no checkpoint metrics"
        for key, by_step in expected.items():
            hist = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in hist) == sorted(by_step), key
            assert all(math.isclose(m.value, by_step[m.step], abs_tol=1e-9) for m in hist), key
        assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2]
    finally:
        server.kill()
    # the history lives in PostgreSQL, not in a file beside the server
    with psycopg2.connect(dsn(pg_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT key), count(*) FROM metrics WHERE run_uuid = %s", (run_id,))
        keys, values = cur.fetchone()
    assert keys >= len(expected) and values >= sum(len(v) for v in expected.values())
    assert not list(tmp_path.glob("*.db"))
