"""Every registered preference algorithm on the tiny random model: a real TRL trainer runs 2 steps, the
loss is logged, the weights change, and every checkpoint is scored and read back from a SQLite MLflow store."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
import yaml
from safetensors.torch import load_file

from valuedrift.algorithms.base import DataKind
from valuedrift.algorithms.registry import ALGORITHMS, get_algorithm
from valuedrift.config.load import parse_params
from valuedrift.core.errors import ConfigError
from valuedrift.stages import preferences
from valuedrift.train.po import run_po

from .conftest import ROOT, fresh_mlflow_uri, tiny_params_dict

PREF_SET = "value_gap"
# budgets cut to the bone for the tiny model (2 steps; tiny RL rollouts)
TINY_HPARAMS = {
    "dpo": {"beta": 0.1, "loss_type": ["sigmoid", "ipo"]},  # a list of DPO losses
    "rm_rloo": {"num_generations": 2, "max_completion_length": 8, "reward_steps": 2},
    "rm_grpo": {"num_generations": 2, "max_completion_length": 8, "reward_steps": 2},
}


def tiny_po_params(model: str) -> dict:
    p = tiny_params_dict(model=model)
    p["eval"]["capability_rows"] = 0  # the capability probe is tested elsewhere
    p["prepare_data"]["preference_sets"][PREF_SET]["target"] = "oppose"  # no SFT profile needed
    p["po"]["hparams"].update(TINY_HPARAMS)
    return p


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_mlflow_db) -> str:
    """One SQLite MLflow store for every algorithm run of this module (each run has its own run id)."""
    return fresh_mlflow_uri(tmp_path_factory.mktemp("mlflow"), empty_mlflow_db)


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory, tiny_model_dir):
    """processed/preferences/value_gap.jsonl made by the real preferences stage."""
    tmp = tmp_path_factory.mktemp("prefs")
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_po_params(str(tiny_model_dir)), sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        preferences.main(["--params", str(params_file), "--out", str(tmp / "processed"), "--set", PREF_SET,
                          "--sft-run", str(tmp / "no_sft_run")])
    assert (tmp / "processed" / "preferences" / f"{PREF_SET}.jsonl").exists()
    return tmp / "processed"


def test_registry_declares_needs():
    needs = {name: (a.needs_reference_model, a.data, a.needs_reward_model) for name, a in ALGORITHMS.items()}
    assert needs == {
        "dpo": (True, DataKind.PAIRED, False),
        "simpo": (False, DataKind.PAIRED, False),
        "orpo": (False, DataKind.PAIRED, False),
        "kto": (True, DataKind.UNPAIRED, False),
        "rm_rloo": (True, DataKind.PAIRED, True),
        "rm_grpo": (True, DataKind.PAIRED, True),
    }
    for a in ALGORITHMS.values():
        assert a.hparams, f"{a.name} declares no hyperparameters"
        assert a.resolve_hparams(None, "k") == {k: h.default for k, h in a.hparams.items()}
    assert "not PPO" in ALGORITHMS["rm_rloo"].description


def test_unknown_algorithm_lists_the_valid_ones(tiny_model_dir):
    with pytest.raises(KeyError, match="valid: dpo, simpo, orpo, kto, rm_rloo, rm_grpo"):
        get_algorithm("ppo")
    p = tiny_po_params(str(tiny_model_dir))
    p["po"]["algorithms"] = ["dpo", "ppo"]
    with pytest.raises(ConfigError, match=r"po\.algorithms\[1\].*valid: dpo, simpo"):
        parse_params(p)


@pytest.mark.parametrize(
    ("algo", "hp", "key"),
    [
        ("simpo", {"gamma": -1.0}, "po.hparams.simpo.gamma"),
        ("kto", {"loss_type": "sigmoid"}, "po.hparams.kto.loss_type"),
        ("dpo", {"loss_type": []}, "po.hparams.dpo.loss_type"),
        ("rm_rloo", {"num_generations": 2.5}, "po.hparams.rm_rloo.num_generations"),
        ("rm_rloo", {"kl_coef": -0.1}, "po.hparams.rm_rloo.kl_coef"),
        ("rm_grpo", {"num_generations": 3}, "po.hparams.rm_grpo.num_generations"),  # batch 2 is not a multiple of 3
        ("orpo", {"lambda": 0.1}, "po.hparams.orpo.lambda"),
    ],
)
def test_bad_hparams_fail_before_any_model_loads(tiny_model_dir, algo, hp, key):
    p = tiny_po_params(str(tiny_model_dir))
    p["po"]["algorithms"] = [algo]
    p["po"]["hparams"][algo] = {**p["po"]["hparams"].get(algo, {}), **hp}
    with pytest.raises(ConfigError) as e:
        parse_params(p)
    assert e.value.key == key


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_algorithm_trains_and_traces_every_checkpoint(algorithm, pref_data, tiny_model_dir, tmp_path, store, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    params = parse_params(tiny_po_params(str(tiny_model_dir)))
    run_dir = run_po(params, tiny_model_dir, pref_data, tmp_path / "runs", algorithm, PREF_SET)

    client = mlflow.tracking.MlflowClient(store)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["algorithm"] == algorithm and run.data.tags["stage"] == "po"
    assert run.data.tags["needs.reward_model"] == str(ALGORITHMS[algorithm].needs_reward_model)
    # the loss was logged at every step
    loss = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in loss) == [1, 2] and all(math.isfinite(m.value) for m in loss)
    # every checkpoint was scored and mirrored: step 0, each eval_every=1 step, the end
    stance = client.get_metric_history(run_id, "stance/all/support")
    assert sorted(m.step for m in stance) == [0, 1, 2] and all(0 < m.value < 1 for m in stance)
    assert client.get_metric_history(run_id, "phase/stance/test/all/oppose")
    arts = {a.path for a in client.list_artifacts(run_id, "evals")}
    assert {"evals/step_000000.jsonl", "evals/step_000002.jsonl"} <= arts
    # where the run's time went: scoring vs the rest, eval_share = eval ÷ train
    m = run.data.metrics
    assert 0 < m["time/eval_seconds"] < m["time/run_seconds"]
    assert m["time/train_seconds"] == pytest.approx(m["time/run_seconds"] - m["time/eval_seconds"])
    assert m["time/eval_share"] == pytest.approx(m["time/eval_seconds"] / m["time/train_seconds"])
    by_route = {k: v for k, v in m.items() if k.startswith("time/eval_seconds/")}
    assert set(by_route) == {"time/eval_seconds/likelihood"}  # the tiny params trace the likelihood route only
    assert sum(by_route.values()) == pytest.approx(m["time/eval_seconds"])
    # the weights changed
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(run_dir / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after), f"{algorithm} changed no weight"
    if ALGORITHMS[algorithm].needs_reward_model:
        assert (run_dir / "reward" / "reward_model" / "config.json").exists()
        assert not (run_dir / "reward" / "checkpoints").exists(), "reward-model resume checkpoints left for DVC to cache"
        assert client.get_metric_history(run_id, "reward_model/loss"), "reward-model phase not logged"
        assert client.get_metric_history(run_id, "train/rewards/reward_model/mean"), "RL reward not logged"
        assert client.get_metric_history(run_id, "train/kl"), "KL to the SFT reference not logged"
