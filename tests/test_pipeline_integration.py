"""The real pipeline (`dvc repro`) on the bundled SmolLM2 with a tiny budget, in a temporary copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from .conftest import ROOT, tiny_params_dict

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The pipeline's outputs (~2 GB: models and runs) are hard-linked from the DVC cache rather than copied,
    and removed when the module's tests are done, so the suite's peak disk use stays near one copy."""
    d = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "MLproject"):
        shutil.copy(ROOT / name, d / name)
    shutil.copytree(ROOT / "src", d / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", d / "data")
    (d / "sweeps" / ".dvc").mkdir(parents=True)  # the sweep pipeline, a DVC subproject (as in the repository)
    shutil.copy(ROOT / "sweeps" / "dvc.yaml", d / "sweeps" / "dvc.yaml")
    config = (ROOT / "sweeps" / ".dvc" / "config").read_text()
    (d / "sweeps" / ".dvc" / "config").write_text(config + "[core]\n    no_scm = true\n")  # this copy has no git
    # the counterfactual subproject, with its committed result (the report's "Attribution" section cites it)
    (d / "counterfactual" / ".dvc").mkdir(parents=True)
    shutil.copy(ROOT / "counterfactual" / "dvc.yaml", d / "counterfactual" / "dvc.yaml")
    shutil.copytree(ROOT / "counterfactual" / "metrics", d / "counterfactual" / "metrics")
    (d / "counterfactual" / ".dvc" / "config").write_text(config + "[core]\n    no_scm = true\n")
    p = tiny_params_dict()
    p["po"]["algorithms"] = ["dpo"]
    p["po"]["preference_sets"] = ["value_gap"]  # one preference run keeps the suite's budget
    p["eval"]["trace_judged"] = True  # the judged route traced in every run (train_judge runs first)
    p["attribute"]["runs"] = ["po/dpo-value_gap"]  # 8 pairs; the 400 SFT rows would take minutes on SmolLM2
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"}
    _run(["dvc", "init", "--no-scm", "-q"], d, env)
    _run(["dvc", "config", "cache.type", "hardlink,copy"], d, env)
    (d / ".dvc" / "plots").mkdir(exist_ok=True)  # the repository's custom plot template (Δv with its CI band)
    shutil.copy(ROOT / ".dvc" / "plots" / "delta.json", d / ".dvc" / "plots" / "delta.json")
    _run(["dvc", "repro"], d, env, timeout=1200)
    yield d, env
    shutil.rmtree(d, ignore_errors=True)


def test_repro_produces_traced_runs_and_clean_status(repo):
    d, env = repo
    assert (d / "models" / "base" / "model.safetensors").exists()
    traj = json.loads((d / "runs" / "sft" / "neutral_heavy" / "trajectory.json").read_text())
    assert [c["step"] for c in traj["checkpoints"]] == [0, 1, 2]
    po = list((d / "runs" / "po").glob("*/trajectory.json"))
    assert po, "no preference-optimisation run was traced"
    judged = json.loads((d / "runs" / "sft" / "neutral_heavy" / "judged" / "trajectory.json").read_text())
    assert [c["step"] for c in judged["checkpoints"]] == [0, 1, 2]
    base = json.loads((d / "runs" / "base" / "trajectory.json").read_text())
    assert base["checkpoints"][0]["full"] == traj["checkpoints"][0]["full"]  # step 0 adopted from trace_base
    summary = json.loads((d / "metrics" / "instrument" / "summary.json").read_text())
    assert summary["quick_source"] == "traced"  # the instrument read the runs' judged phase ends
    phase_ends = (d / "metrics" / "instrument" / "phase_ends.csv").read_text()
    assert "sft/neutral_heavy,judged (classifier)" in phase_ends and "po/dpo-value_gap,likelihood" in phase_ends
    assert (d / "metrics" / "judged" / "drift_summary.csv").exists()
    report = (d / "reports" / "report.md").read_text()
    assert "## Instrument" in report and "| classifier | generations_test |" in report
    assert "## Design targets of the default study" in report and "judged route (classifier judge)" in report
    status = _run(["dvc", "status", "--json"], d, env)
    assert json.loads(status.stdout or "{}") == {}, status.stdout  # the sweep subproject is not reported here
    sweep_status = json.loads(_run(["dvc", "status", "--json"], d / "sweeps", env).stdout or "{}")
    assert list(sweep_status) == ["tune"], sweep_status  # ... but in its own folder: never run yet
    cf_status = json.loads(_run(["dvc", "status", "--json"], d / "counterfactual", env).stdout or "{}")
    assert set(cf_status) == {"select", "retrain", "compare"}, cf_status  # its own project, not run in this copy
    assert "## Attribution" in report and "### po/dpo-value_gap" in report and "### Counterfactual retraining" in report
    influence = (d / "metrics" / "attribution" / "po" / "dpo-value_gap" / "influence.csv").read_text().splitlines()
    pairs = yaml.safe_load((d / "params.yaml").read_text())["prepare_data"]["preference_sets"]["value_gap"]["pairs"]
    assert len(influence) == 1 + pairs  # one row per distinct pair


def numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers(v)]
    return [obj] if isinstance(obj, int | float) and not isinstance(obj, bool) else []


def test_dvc_metrics_and_plots(repo):
    d, env = repo
    shown = _run(["dvc", "metrics", "show", "--json"], d, env)
    assert "failed to load" not in shown.stderr.lower(), shown.stderr
    text = shown.stdout
    assert "metrics/headline.json" in text and "drift_summary" not in text and "drift.json" not in text  # one small file
    head = json.loads((d / "metrics" / "headline.json").read_text())
    assert set(head["sft/neutral_heavy:neutral"]) == {"drift", "ci_lo", "ci_hi", "drift_time"}
    assert any(k.startswith("po/dpo-value_gap:") for k in head) and 0 <= head["judge_accuracy"] <= 1
    assert len(numbers(head)) <= 15
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], d, env).stdout)
    assert not plots.get("errors"), plots.get("errors")
    delta = plots["data"]["plots/judged/delta_all.csv"][0]["content"]
    spec = json.dumps(delta["spec"])
    assert '"field": "chain_step"' in spec and '"field": "dv"' in spec and '"field": "dv_lo"' in spec
    rows = delta["data"]["values"]
    assert {r["run"] for r in rows} == {"sft/neutral_heavy", "po/dpo-value_gap"}
    assert {r["stance"] for r in rows} == {"support", "neutral", "oppose"}
    sft_end = max(int(r["chain_step"]) for r in rows if r["run"] == "sft/neutral_heavy")
    assert min(int(r["chain_step"]) for r in rows if r["run"] == "po/dpo-value_gap") == sft_end  # one chain axis
    bars = plots["data"]["plots/drift_bars.csv"][0]["content"]
    assert len(bars["data"]["values"]) == 2 and '"field": "magnitude"' in json.dumps(bars)  # one bar per run
    assert any(k.endswith("drift_bars.png") for k in plots["data"])  # the PNG figures are image plots
    _run(["dvc", "plots", "show", "-o", str(d / "plots_html")], d, env)
    assert (d / "plots_html" / "index.html").exists()
    assert (d / "plots" / "trajectories.png").stat().st_size > 10_000


def test_mlflow_runs_share_a_pipeline_id(repo):
    d, env = repo
    client = mlflow.tracking.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("valuedrift")
    runs = client.search_runs([exp.experiment_id])
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"sft", "po"} <= stages
    assert len({r.data.tags["pipeline_id"] for r in runs if r.data.tags.get("stage") in ("sft", "po")}) == 1
    report = next(r for r in runs if r.data.tags.get("stage") == "report")
    head = json.loads((d / "metrics" / "headline.json").read_text())
    assert report.data.metrics["headline/judge_accuracy"] == head["judge_accuracy"]  # the headline, logged
    sft = next(r for r in runs if r.data.tags.get("stage") == "sft")
    assert "judged/drift/all/neutral/magnitude" in sft.data.metrics and "drift/test/oppose/time" in sft.data.metrics


def test_mlflow_run_entry_point(repo):
    d, env = repo
    _run(["mlflow", "run", ".", "-e", "drift", "--env-manager", "local"], d, env, timeout=300)
