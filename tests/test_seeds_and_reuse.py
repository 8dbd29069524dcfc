"""Seeds repeat runs and aggregate over seeds; a preference run reuses the SFT run's final evaluation."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import yaml

from valuedrift.config.load import parse_params
from valuedrift.stages import drift as drift_stage
from valuedrift.stages import po as po_stage
from valuedrift.stages import preferences, prepare_data
from valuedrift.stages import sft as sft_stage

from .conftest import ROOT, tiny_params_dict


@pytest.fixture(scope="module")
def two_seed_study(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("seeds")
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["seeds"] = [0, 1]
    p["prepare_data"]["preference_sets"]["value_gap"]["target"] = "oppose"
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        common = ["--params", str(params_file)]
        prepare_data.main([*common, "--out", str(tmp / "processed")])
        sft_stage.main([*common, "--base-model", str(tiny_model_dir), "--processed", str(tmp / "processed"),
                        "--out", str(runs / "sft")])
        preferences.main([*common, "--out", str(tmp / "processed"), "--sft-run", str(runs / "sft" / p["po"]["start_from"])])
        po_stage.main([*common, "--algorithm", "dpo", "--preference-set", "value_gap", "--processed", str(tmp / "processed"),
                       "--sft-runs", str(runs / "sft"),
                       "--out", str(runs / "po")])
        drift_stage.main([*common, "--runs", str(runs), "--metrics", str(tmp / "metrics"), "--plots", str(tmp / "plots")])
    return tmp, parse_params(p), uri


def test_each_seed_has_its_own_run_and_po_starts_from_the_same_seed(two_seed_study):
    tmp, params, _ = two_seed_study
    corpus = params.po.start_from
    assert (tmp / "runs" / "sft" / corpus / "final" / "config.json").exists()
    assert (tmp / "runs" / "sft" / corpus / "seeds" / "1" / "final" / "config.json").exists()
    for seed_dir, sft_dir in ((tmp / "runs" / "po" / "dpo-value_gap", tmp / "runs" / "sft" / corpus),
                              (tmp / "runs" / "po" / "dpo-value_gap" / "seeds" / "1", tmp / "runs" / "sft" / corpus / "seeds" / "1")):
        po_traj = json.loads((seed_dir / "trajectory.json").read_text())
        sft_traj = json.loads((sft_dir / "trajectory.json").read_text())
        last = sft_traj["checkpoints"][-1]["step"]
        # step 0 of the preference run is the SFT run's final evaluation, adopted rather than recomputed
        po0 = (seed_dir / "evals" / "step_000000.jsonl").read_text()
        assert po0 == (sft_dir / "evals" / f"step_{last:06d}.jsonl").read_text()
        assert po_traj["checkpoints"][0]["step"] == 0 and po_traj["checkpoints"][0]["phase"]
    # two seeds trained differently: their final tables differ
    a = (tmp / "runs" / "sft" / corpus / "evals" / "step_000002.jsonl").read_text()
    b = (tmp / "runs" / "sft" / corpus / "seeds" / "1" / "evals" / "step_000002.jsonl").read_text()
    assert a != b


def test_every_seed_is_scored_on_the_same_probes(two_seed_study):
    """Probe subsets follow eval.probe_seed (default: the top-level seed), not the training seed."""
    tmp, params, _ = two_seed_study
    sft = tmp / "runs" / "sft" / params.po.start_from

    def probe_ids(run_dir, step):
        return {json.loads(line)["probe_id"] for line in (run_dir / "evals" / f"step_{step:06d}.jsonl").read_text().splitlines()}

    for step in (0, 1, 2):  # phase, trace, phase (eval_every 1, max_steps 2)
        assert probe_ids(sft, step) == probe_ids(sft / "seeds" / "1", step)
    assert probe_ids(sft, 1) <= probe_ids(sft, 0)  # trace ⊆ phase


def test_drift_aggregates_over_seeds(two_seed_study):
    tmp, _, _ = two_seed_study
    per_run = pd.read_csv(tmp / "metrics" / "drift_table.csv")
    assert sorted(per_run.seed.unique()) == [0, 1]
    summary = pd.read_csv(tmp / "metrics" / "drift_summary.csv")
    row = summary[(summary.phase == "po/dpo-value_gap") & (summary.split == "all") & (summary.topic == "all")
                  & (summary.stance == "oppose")].iloc[0]
    mags = per_run[(per_run.phase == "po/dpo-value_gap") & (per_run.split == "all") & (per_run.topic == "all")
                   & (per_run.stance == "oppose")].magnitude
    assert row.n_seeds == 2 and row.ci_kind == "seeds"
    assert row.magnitude == pytest.approx(mags.mean())
    assert row.ci_lo <= row.magnitude <= row.ci_hi
    headline = json.loads((tmp / "metrics" / "drift.json").read_text())
    assert headline["po/dpo-value_gap"]["seeds"] == 2


def test_step_zero_reaches_mlflow_once_per_seed(two_seed_study):
    _, _, uri = two_seed_study
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("valuedrift")
    po_runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "po"]
    assert sorted(r.data.tags["seed"] for r in po_runs) == ["0", "1"]
    for r in po_runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "stance/all/oppose")]
        assert sorted(steps) == [0, 1, 2]


def test_eval_stage_reuses_the_final_training_evaluation(two_seed_study, monkeypatch):
    from valuedrift.stages import eval as eval_stage

    tmp, params, uri = two_seed_study
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = tmp / "runs" / "sft" / params.po.start_from
    out = tmp / "eval_out"
    eval_stage.main(["--params", str(tmp / "params.yaml"), "--route", "likelihood", "--checkpoint", str(run / "final"),
                     "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused_training_evaluation"] is True
    last = json.loads((run / "trajectory.json").read_text())["checkpoints"][-1]
    final = next(r for r in last["full"] if r["split"] == "all" and r["topic"] == "all")
    assert summary["stance"]["all"]["support"] == pytest.approx(final["support"])
