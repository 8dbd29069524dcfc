"""Optuna sweeps over po hyperparameters (issue 7), on the tiny random model: real Optuna storages (SQLite,
JournalStorage), real MLflow (SQLite), real TRL trainers, real worker processes (killed with SIGKILL), and a
real ``dvc exp run`` in a throw-away git + DVC repository."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from valuedrift import cli
from valuedrift.config.load import parse_params
from valuedrift.core.errors import ConfigError
from valuedrift.tune.objectives import ObjectiveSpec, parse_reference
from valuedrift.tune.storage import count_trials

from .conftest import ROOT, tiny_params_dict
from .training_hold import Hold


@pytest.fixture(scope="module")
def sweep_mlflow(tmp_path_factory) -> str:
    """One SQLite MLflow store for this module (creating one costs seconds); tests tell their runs apart
    by study name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def mlflow_uri(sweep_mlflow: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep_mlflow)
    return sweep_mlflow


def sweep_params(model: Path, storage: str, **tune) -> dict:
    p = tiny_params_dict(model=str(model))
    p["eval"]["capability_rows"] = 4
    p["tune"].update({"storage": storage, "enqueue": [], **tune})
    return p


def write_params(tmp_path: Path, p: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def sweep_argv(params: Path, model: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["sweep", "--params", str(params), "--sft-model", str(model), "--out", str(tmp_path / "tune"),
            "--metrics", str(tmp_path / "metrics" / "sweep.json"), "--plots", str(tmp_path / "plots"), *extra]


def worker_process(
    params: Path, model: Path, tmp_path: Path, index: int, log: Path, hold: Hold
) -> subprocess.Popen:
    """A sweep worker process (``valuedrift sweep --worker-index``) whose training stops at ``hold``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **hold.env()}
    argv = sweep_argv(params, model, tmp_path, "--worker-index", str(index), "--no-outputs")
    cmd = [sys.executable, "-m", "tests.training_hold", *argv]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def wait_for(cond, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None and not cond():
            raise AssertionError(f"worker exited with {proc.returncode} first:\n{log.read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def trial_runs(uri: str, study: str) -> list:
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("valuedrift")
    return [r for r in client.search_runs([exp.experiment_id]) if "optuna.trial" in r.data.tags
            and r.data.tags["optuna.study"] == study]


# --------------------------------------------------------------------------------------------------
# Bad input fails before any trial
# --------------------------------------------------------------------------------------------------

BAD = [
    ({"space": {"learning_rate": {"low": 1e-3, "high": 1e-5}}}, "tune.space.learning_rate", "inverted"),
    ({"space": {"steps": {"low": 4, "high": 4}}}, "tune.space.steps", "empty range"),
    ({"space": {"gap": {"choices": []}}}, "tune.space.gap.choices", "empty"),
    ({"space": {"gap": {"low": 0.5, "high": 1.5}}}, "tune.space.gap.high", "<= 1.0"),
    ({"space": {"warmup": {"low": 0.0, "high": 0.1}}}, "tune.space.warmup", "not a shared dimension"),
    ({"hparams": {"dpo": {"gamma": {"low": 0.1, "high": 1.0}}}}, "tune.hparams.dpo.gamma", "unknown hyperparameter for dpo"),
    ({"hparams": {"dpo": {"beta": {"low": 0.0, "high": 1.0}}}}, "tune.hparams.dpo.beta.low", "must be > 0.0"),
    ({"hparams": {"dpo": {"loss_type": {"choices": [["sigmoid"], ["nope"]]}}}}, "tune.hparams.dpo.loss_type.choices[1]", "'nope'"),
    ({"hparams": {"simpo": {"gamma": {"low": 0.1, "high": 1.0}}}}, "tune.hparams.simpo", "not in tune.algorithms"),
    ({"sampler": "grid", "space": {"learning_rate": {"low": 1e-6, "high": 1e-4, "log": True}}}, "tune.space.learning_rate", "grid"),
    ({"enqueue": [{"dpo.betaa": 0.1}]}, "tune.enqueue[0].dpo.betaa", "not a dimension"),
    ({"objectives": ["align"]}, "tune.reference", "reference profile"),
    ({"objectives": ["align"], "reference": {"support": 0.5, "neutral": 0.6, "oppose": 0.1}}, "tune.reference", "sum to 1"),
    ({"preference_set": "nope"}, "tune.preference_set", "not defined"),
]


@pytest.mark.parametrize(("tune", "key", "words"), BAD)
def test_bad_search_space_names_the_key(tune, key, words):
    p = tiny_params_dict()
    p["tune"].update(tune)
    with pytest.raises(ConfigError) as e:
        parse_params(p)
    assert e.value.key == key and words in str(e.value)


def test_bad_space_fails_the_command_before_any_trial(tmp_path, capsys, tiny_model_dir):
    storage = tmp_path / "optuna.journal"
    p = sweep_params(tiny_model_dir, f"journal:{storage}", hparams={"dpo": {"beta": {"low": 0.5, "high": 0.1}}})
    assert cli.main(sweep_argv(write_params(tmp_path, p), tiny_model_dir, tmp_path)) == 2
    assert "tune.hparams.dpo.beta: inverted range" in capsys.readouterr().err
    assert not storage.exists() and not (tmp_path / "tune").exists()


def test_storage_url_is_checked_and_env_overrides_it(monkeypatch):
    from valuedrift.tune.storage import check_storage, resolve_storage

    tune = parse_params(tiny_params_dict()).tune
    for ok in ("sqlite:///optuna.db", "postgresql+psycopg2://u:pw@host:5432/db", "journal:runs/optuna.journal"):
        check_storage(ok)
    with pytest.raises(ConfigError) as e:
        check_storage("optuna.db")
    assert e.value.key == "tune.storage"
    monkeypatch.setenv("VALUEDRIFT_OPTUNA_STORAGE", "mysql://u:secretpw@db/optuna")
    assert resolve_storage(tune) == "mysql://u:secretpw@db/optuna"
    with pytest.raises(ConfigError) as e:
        check_storage("redis://u:secretpw@db")
    assert e.value.key == "$VALUEDRIFT_OPTUNA_STORAGE" and "secretpw" not in str(e.value)


# --------------------------------------------------------------------------------------------------
# Objectives (pure)
# --------------------------------------------------------------------------------------------------


def _vectors(test_all: dict, test_topics: dict | None = None) -> list[dict]:
    rows = [{"split": "test", "topic": "all", **test_all}, {"split": "dev", "topic": "all", "support": 1.0, "neutral": 0.0, "oppose": 0.0}]
    rows += [{"split": "test", "topic": t, **v} for t, v in (test_topics or {}).items()]
    return rows


def test_objective_values_follow_their_formulas():
    v0 = {"support": 0.5, "neutral": 0.3, "oppose": 0.2}
    v1 = {"support": 0.2, "neutral": 0.3, "oppose": 0.5}
    start = {"trace": _vectors(v0), "full": _vectors(v0), "metrics": {}}
    end = {"trace": _vectors(v1), "full": _vectors(v1, {"race": v1, "gender": v0}), "metrics": {"capability/heldout_nll": 2.5}}
    ref = parse_reference({"support": 0.2, "neutral": 0.3, "oppose": 0.5}, "tune.reference")
    spec = ObjectiveSpec(["toward_target", "preserve", "align", "capability"], "oppose", "test", ref, "jsd")
    got = spec.values(start, end, final=True)
    assert got["toward_target"] == pytest.approx(0.3)  # M = v1[oppose] - v0[oppose]
    assert got["preserve"] == pytest.approx(0.3)  # ½ (0.3 + 0 + 0.3)
    assert got["align"] == pytest.approx(1.0)  # identical to the reference
    assert got["capability"] == 2.5
    assert spec.directions == ["maximize", "minimize", "maximize", "minimize"]
    per_topic = ObjectiveSpec(["align"], "oppose", "test", parse_reference({"race": v1, "gender": v1}, "r"), "w1")
    assert per_topic.values(start, end, final=True)["align"] == pytest.approx((1.0 + (1 - 0.6 / 2)) / 2)
    with pytest.raises(ConfigError, match="none of its topics"):
        ObjectiveSpec(["align"], "oppose", "test", parse_reference({"abortion": v1}, "r")).check_reference_topics(end["full"])


# --------------------------------------------------------------------------------------------------
# One sweep: complete, pruned and failed trials, MLflow nesting, outputs
# --------------------------------------------------------------------------------------------------


def test_sweep_prunes_records_failures_and_writes_outputs(tmp_path, mlflow_uri, monkeypatch, tiny_model_dir, one_thread):
    monkeypatch.chdir(ROOT)
    p = sweep_params(
        tiny_model_dir, f"journal:{tmp_path / 'optuna.journal'}", study="t", n_trials=3, objectives=["preserve"],
        algorithms=["dpo", "rm_rloo"], pruner_startup_trials=1, startup_trials=1,
        space={"learning_rate": {"low": 1e-6, "high": 0.5, "log": True}},
        hparams={"dpo": {"beta": {"low": 0.05, "high": 0.5}}, "rm_rloo": {"num_generations": {"choices": [3]}}},
        enqueue=[
            {"algorithm": "dpo", "learning_rate": 1e-6, "dpo.beta": 0.1},  # barely moves: completes
            {"algorithm": "dpo", "learning_rate": 0.5, "dpo.beta": 0.1},  # moves a lot at step 1: pruned
            {"algorithm": "rm_rloo", "learning_rate": 1e-5, "rm_rloo.num_generations": 3},  # batch 2 % 3: raises
        ],
    )
    assert cli.main(sweep_argv(write_params(tmp_path, p), tiny_model_dir, tmp_path)) == 0

    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))))
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert set(trials[0].intermediate_values) == {1, 2} and set(trials[1].intermediate_values) == {1}
    assert "num_generations" in trials[2].user_attrs["error"]

    client = mlflow.tracking.MlflowClient(mlflow_uri)
    runs = {int(r.data.tags["optuna.trial"]): r for r in trial_runs(mlflow_uri, "t")}
    assert sorted(runs) == [0, 1, 2]
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent_id}
    assert [runs[n].data.tags["optuna.state"] for n in range(3)] == ["COMPLETE", "PRUNED", "FAIL"]
    assert [runs[n].info.status for n in range(3)] == ["FINISHED", "FINISHED", "FAILED"]
    done = runs[0]
    assert done.data.params["trial.learning_rate"] == "1e-06" and done.data.params["po.learning_rate"] == "1e-06"
    assert done.data.metrics["objective/preserve"] == pytest.approx(trials[0].value)
    assert [m.step for m in client.get_metric_history(done.info.run_id, "stance/test/all/oppose")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(runs[1].info.run_id, "objective/running/preserve")] == [1]
    parent = client.get_run(parent_id)
    assert parent.data.tags["best.trial"] == "0" and parent.data.tags["best.param.algorithm"] == "dpo"
    assert parent.data.metrics["best/preserve"] == pytest.approx(trials[0].value)

    best = yaml.safe_load((tmp_path / "tune" / "best_params.yaml").read_text())
    assert best["best"][0]["trial"] == 0
    assert best["best"][0]["overrides"] == {"po.algorithms": ["dpo"], "po.learning_rate": 1e-6, "po.hparams.dpo.beta": 0.1}
    assert "-S po.hparams.dpo.beta=0.1" in best["best"][0]["dvc_exp_run"]
    metrics = json.loads((tmp_path / "metrics" / "sweep.json").read_text())
    assert metrics["trials"]["complete"] == 1 and metrics["trials"]["pruned"] == 1 and metrics["trials"]["fail"] == 1
    for stem in ("history_preserve", "parallel_coordinate_preserve", "intermediate_values"):
        assert (tmp_path / "plots" / f"{stem}.png").stat().st_size > 0
        assert (tmp_path / "plots" / f"{stem}.html").stat().st_size > 0
    assert (tmp_path / "plots" / "plotly.min.js").exists()
    assert len((tmp_path / "tune" / "trials.csv").read_text().strip().splitlines()) == 4
    work = tmp_path / "tune" / "work" / "t"
    assert not list(work.rglob("*.safetensors")), "trial weights were kept"
    # every trial starts from the one baseline record of the SFT checkpoint
    baseline = json.loads(next(work.glob("baseline-*/trajectory.json")).read_text())["checkpoints"][0]
    traj = json.loads((work / "trials" / "0000" / "dpo-value_gap" / "trajectory.json").read_text())
    assert traj["checkpoints"][0] == baseline and [c["step"] for c in traj["checkpoints"]] == [0, 1, 2]


# --------------------------------------------------------------------------------------------------
# Resumption after a real kill; two worker processes on one storage
# --------------------------------------------------------------------------------------------------


def test_killed_sweep_resumes_without_redoing_finished_trials(tmp_path, mlflow_uri, monkeypatch, tiny_model_dir, one_thread):
    monkeypatch.chdir(ROOT)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    p = sweep_params(tiny_model_dir, url, study="k", n_trials=2, sampler="grid", pruner="none",
                     space={"learning_rate": {"choices": [1e-6, 1e-2]}}, hparams={})
    params = write_params(tmp_path, p)
    log = tmp_path / "worker.log"
    # trial 0 trains to the end; trial 1 stops after the first of its 2 steps (its MLflow run open) until killed
    hold = Hold(tmp_path / "hold", step=1, match=f"{os.sep}trials{os.sep}0001{os.sep}")
    proc = worker_process(params, tiny_model_dir, tmp_path, 0, log, hold)
    try:
        wait_for(hold.is_held, proc, log)
        trials = optuna.load_study(study_name="k", storage=url).trials
        assert [t.state.name for t in trials] == ["COMPLETE", "RUNNING"]  # one finished, one training
        assert "mlflow_run_id" in trials[1].user_attrs and hold.info()["step"] == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    before = {t.number: t for t in optuna.load_study(study_name="k", storage=url).trials}
    finished = {n: t for n, t in before.items() if t.state.name == "COMPLETE"}
    killed = [n for n, t in before.items() if t.state.name == "RUNNING"]
    assert finished and len(killed) == 1, ({n: t.state.name for n, t in before.items()}, log.read_text()[-3000:])

    assert cli.main(sweep_argv(params, tiny_model_dir, tmp_path, "--no-outputs")) == 0
    study = optuna.load_study(study_name="k", storage=url)
    after = {t.number: t for t in study.trials}
    for n, t in finished.items():  # not redone
        assert after[n].datetime_complete == t.datetime_complete and after[n].params == t.params
    k = killed[0]
    assert after[k].state.name == "FAIL" and "error" not in after[k].user_attrs  # interrupted, not an error
    retries = [t for t in after.values() if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == k]
    assert len(retries) == 1 and retries[0].params == before[k].params and retries[0].state.name == "COMPLETE"
    c = count_trials(study)
    assert (c.complete, c.finished, c.interrupted) == (2, 2, 1)
    grid_points = sorted(t.params["learning_rate"] for t in study.trials if t.state.name == "COMPLETE")
    assert grid_points == [1e-6, 1e-2]  # each grid point trained to completion exactly once
    runs = {r.data.tags["optuna.trial"]: r for r in trial_runs(mlflow_uri, "k")}
    assert runs[str(k)].data.tags.get("optuna.interrupted") == "true" and runs[str(k)].info.status == "FAILED"


def test_two_worker_processes_share_one_study(tmp_path, mlflow_uri, monkeypatch, tiny_model_dir, one_thread):
    monkeypatch.chdir(ROOT)
    journal = tmp_path / "optuna.journal"
    storage = f"journal:{journal}"
    p = sweep_params(tiny_model_dir, storage, study="par", n_trials=3, objectives=["align", "capability"],
                     reference={"support": 0.2, "neutral": 0.6, "oppose": 0.2}, population_size=4,
                     space={"learning_rate": {"low": 1e-6, "high": 1e-2, "log": True}}, hparams={})
    params = write_params(tmp_path, p)
    log = tmp_path / "worker1.log"
    # worker 1 stops at the start of its first trial's training until worker 0 (this process) is training
    # a trial too: both workers run trials, whichever starts faster
    hold = Hold(tmp_path / "hold", step=0)
    proc = worker_process(params, tiny_model_dir, tmp_path, 1, log, hold)

    journal_storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))

    def load() -> optuna.Study:
        return optuna.load_study(study_name="par", storage=journal_storage)

    def worker0_training() -> bool:
        running = load().get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return any(t.user_attrs.get("worker", {}).get("pid") == os.getpid() for t in running)

    def release_when_worker0_trains() -> None:
        try:
            deadline = time.monotonic() + 600
            while not worker0_training() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            hold.release()

    try:
        wait_for(hold.is_held, proc, log)
        assert count_trials(load()).running == 1
        releaser = threading.Thread(target=release_when_worker0_trains, daemon=True)
        releaser.start()
        # worker 0, this process
        assert cli.main(sweep_argv(params, tiny_model_dir, tmp_path, "--no-outputs")) == 0
        releaser.join(timeout=60)
        assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        hold.release()
        stop(proc)
    assert cli.main(sweep_argv(params, tiny_model_dir, tmp_path, "--outputs-only")) == 0

    trials = load().trials  # 3, or 4 if both workers started a last trial at the same instant
    assert len(trials) >= 3 and all(t.state.name == "COMPLETE" for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert pids == {proc.pid, os.getpid()}, "both workers must have run trials"
    assert len({t.params["learning_rate"] for t in trials}) == len(trials), "the two samplers proposed the same point"
    runs = [int(r.data.tags["optuna.trial"]) for r in trial_runs(mlflow_uri, "par")]
    assert sorted(runs) == [t.number for t in trials], "a trial ran twice or not at all"
    dirs = sorted(d.name for d in (tmp_path / "tune" / "work" / "par" / "trials").iterdir())
    assert dirs == [f"{t.number:04d}" for t in trials]
    best = yaml.safe_load((tmp_path / "tune" / "best_params.yaml").read_text())
    assert best["best"] and all(set(b["values"]) == {"align", "capability"} for b in best["best"])
    assert (tmp_path / "plots" / "pareto_front.png").exists() and (tmp_path / "plots" / "pareto_front.html").exists()


# --------------------------------------------------------------------------------------------------
# DVC experiments: a one-off variation of a po hyperparameter
# --------------------------------------------------------------------------------------------------


def test_dvc_exp_run_sets_a_po_hyperparameter(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]

    def run(*cmd: str) -> subprocess.CompletedProcess:
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    shutil.copytree(ROOT / "data", repo / "data")  # check-params checks the data paths params name
    stage = {"stages": {"resolve": {
        "cmd": f"{sys.executable} -m valuedrift.cli check-params --params params.yaml > resolved.json",
        "params": ["po.hparams.dpo.beta"],
        "outs": [{"resolved.json": {"cache": False}}],
    }}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stage, sort_keys=False))
    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    run(*dvc, "exp", "run", "-S", "po.hparams.dpo.beta=0.3")
    assert json.loads((repo / "resolved.json").read_text())["po"]["hparams"]["dpo"]["beta"] == 0.3
    shown = json.loads(run(*dvc, "exp", "show", "--json").stdout)
    assert "0.3" in json.dumps(shown)


def test_tpe_models_the_conditional_space_jointly():
    """multivariate=True, group=True: the algorithm's own hyperparameters are sampled with the shared ones."""
    from valuedrift.tune.space import dimensions
    from valuedrift.tune.storage import make_sampler

    p = parse_params(tiny_params_dict())
    sampler = make_sampler(p.tune, 0, dimensions(p.tune))
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._multivariate and sampler._group


def test_only_the_schema_creation_race_is_retried():
    """make_storage reconnects after another worker created Optuna's schema first (PostgreSQL: a duplicate
    enum type, or 'relation "studies" already exists'), and re-raises every other SQL error."""
    import sqlalchemy

    from valuedrift.tune.storage import schema_race

    class Orig(Exception):
        def __init__(self, pgcode):
            self.pgcode = pgcode

    def err(cls, pgcode):
        return cls("CREATE TABLE studies", {}, Orig(pgcode))

    assert schema_race(err(sqlalchemy.exc.ProgrammingError, "42P07"))  # duplicate_table
    assert schema_race(err(sqlalchemy.exc.IntegrityError, "23505"))  # the enum type's catalog row
    assert not schema_race(err(sqlalchemy.exc.ProgrammingError, "42601"))  # a syntax error
    assert schema_race(err(sqlalchemy.exc.IntegrityError, None))  # SQLite: no SQLSTATE
    assert not schema_race(err(sqlalchemy.exc.ProgrammingError, None))
