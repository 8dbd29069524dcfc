"""The SFT stage on a tiny random model: stances traced at every checkpoint into a real SQLite MLflow store."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from safetensors.torch import load_file

from valuedrift.config.load import parse_params
from valuedrift.stages import prepare_data
from valuedrift.train.sft import run_sft

from .conftest import ROOT, tiny_params_dict


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("sft")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        params = parse_params(tiny_params_dict(model=str(tiny_model_dir)))
        processed = tmp_path / "processed"
        prepare_data.main(["--out", str(processed)])
        run_dir = run_sft(params, tiny_model_dir, processed, tmp_path / "runs" / "sft")
    return run_dir, params, uri


def test_sft_traces_every_checkpoint_and_logs_to_mlflow(sft_run, tiny_model_dir):
    run_dir, params, uri = sft_run
    traj = json.loads((run_dir / "trajectory.json").read_text())
    steps = [c["step"] for c in traj["checkpoints"]]
    assert steps == [0, 1, 2]  # step 0, every eval_every=1 step, and the end
    assert [c["phase"] for c in traj["checkpoints"]] == [True, False, True]
    for c in traj["checkpoints"]:
        assert (run_dir / "evals" / f"step_{c['step']:06d}.jsonl").exists()

    client = mlflow.tracking.MlflowClient(uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    hist = client.get_metric_history(run_id, "stance/all/support")
    assert sorted(m.step for m in hist) == [0, 1, 2]
    assert all(0.0 < m.value < 1.0 for m in hist)
    # the same number on disk and in MLflow
    disk = {c["step"]: next(r for r in c["trace"] if r["split"] == "all" and r["topic"] == "all")["support"] for c in traj["checkpoints"]}
    assert {m.step: m.value for m in hist} == pytest.approx(disk)
    assert client.get_metric_history(run_id, "train/loss"), "training loss was not logged"
    assert client.get_metric_history(run_id, "phase/stance/test/all/oppose"), "phase metrics on the held-out split missing"
    run = client.get_run(run_id)
    assert run.data.tags["stage"] == "sft" and "git_commit" in run.data.tags and "pipeline_id" in run.data.tags
    arts = {a.path for a in client.list_artifacts(run_id, "evals")}
    assert "evals/step_000000.jsonl" in arts


def test_sft_changes_the_weights(sft_run, tiny_model_dir):
    run_dir, _, _ = sft_run
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(run_dir / "final" / "model.safetensors"))
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed, "no weight changed during SFT"


def test_capability_probe_logged_and_held_out_of_training(sft_run):
    run_dir, params, uri = sft_run
    client = mlflow.tracking.MlflowClient(uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    hist = client.get_metric_history(run_id, "capability/heldout_nll")
    assert sorted(m.step for m in hist) == [0, 1, 2] and all(m.value > 0 for m in hist)

    from valuedrift.core.io import iter_jsonl
    from valuedrift.data.bank import load_general
    from valuedrift.stance.capability import heldout_general_ids

    held = heldout_general_ids(load_general(ROOT / "data"), params.eval.capability_rows, params.seed)
    assert len(held) == params.eval.capability_rows
    corpus = run_dir.parent.parent.parent / "processed" / "sft" / f"{run_dir.name}.jsonl"
    used = {obj["source_id"] for _, obj in iter_jsonl(corpus) if obj["kind"] == "general"}
    assert used and not used & held


def test_the_run_logs_its_own_drift_as_the_drift_stage_computes_it(sft_run):
    """drift/<split>/<stance>/magnitude (with its CI) and .../time at the last step: the drift stage's numbers."""
    from valuedrift.reporting.runs import compute

    run_dir, params, uri = sft_run
    run = mlflow.tracking.MlflowClient(uri).get_run((run_dir / "mlflow_run_id").read_text().strip())
    per_run, _ = compute(run_dir.parent.parent, params.eval.bootstrap, params.eval.ci, params.seed)
    table = per_run[(per_run.topic == "all")].set_index(["split", "stance"])
    for split in ("dev", "test", "all"):
        for s in ("support", "neutral", "oppose"):
            key = f"drift/{split}/{s}"
            assert run.data.metrics[f"{key}/magnitude"] == pytest.approx(table.at[(split, s), "magnitude"])
            assert run.data.metrics[f"{key}/magnitude_lo"] <= run.data.metrics[f"{key}/magnitude"] <= run.data.metrics[f"{key}/magnitude_hi"]
            assert run.data.metrics[f"{key}/time"] == pytest.approx(table.at[(split, s), "drift_time"])


def test_every_checkpoint_is_a_logged_model_with_its_stance_metrics_and_tables(sft_run):
    """MLflow 3 logged models without artifacts (the weights stay DVC outputs), ranked by stance in the UI."""
    run_dir, params, uri = sft_run
    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    mine = sorted((m for m in models if m.source_run_id == run.info.run_id), key=lambda m: int(m.tags["step"]))
    assert [m.name for m in mine] == [f"sft-{run_dir.name}-step-{s}" for s in (0, 1, 2)]
    traj = json.loads((run_dir / "trajectory.json").read_text())
    for m, c in zip(mine, traj["checkpoints"], strict=True):
        support = next(r for r in c["trace"] if r["split"] == "all" and r["topic"] == "all")["support"]
        linked = {x.key: x.value for x in m.metrics}
        assert linked["stance/all/support"] == pytest.approx(support) and "final" in m.tags["weights"]
    contexts = {i.tags[0].value: i.dataset.name for i in run.inputs.dataset_inputs}
    assert contexts == {"training": f"sft/{run_dir.name}", "evaluation": "v_prism probes"}
    assert "SFT of" in run.data.tags["mlflow.note.content"] and str(run_dir) in run.data.tags["mlflow.note.content"]
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert tables == {f"tables/step_{s:06d}.json" for s in (0, 1, 2)}


def test_bf16_autocast_training_is_scored_as_a_float32_reload(sft_run):
    """``sft.mixed_precision: bf16`` (the shipped default) trains the float32 weights in bf16 autocast; the tracer
    scores the live model with the autocast off, so the last step's stances are those of ``final/`` reloaded in
    float32 (under autocast they differ by bf16 rounding, ≈ 1e-4 in mean log-likelihood here). The weights stay float32."""
    from valuedrift.core.io import iter_jsonl
    from valuedrift.data.probes import load_probe_bank, select_probes
    from valuedrift.models import load_model, load_tokenizer
    from valuedrift.stance.likelihood import LikelihoodScorer
    from valuedrift.train.tracing import full_precision

    run_dir, params, _ = sft_run
    assert params.sft.mixed_precision == "bf16"
    final = load_model(run_dir / "final", "float32", "cpu")
    assert all(t.dtype == torch.float32 for t in load_file(str(run_dir / "final" / "model.safetensors")).values())
    ev = params.eval
    probes = select_probes(load_probe_bank(ROOT / "data"), ev.phase_probes_per_topic, ev.splits, params.probe_seed)
    scorer = LikelihoodScorer(load_tokenizer(run_dir / "final"), ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)
    reloaded = {r["probe_id"]: r for r in scorer.score(final, probes)}
    last = sorted((run_dir / "evals").glob("step_*.jsonl"))[-1]
    traced = {obj["probe_id"]: obj for _, obj in iter_jsonl(last)}
    assert set(traced) == set(reloaded)
    for pid, row in reloaded.items():
        for key in ("ll_support", "ll_neutral", "ll_oppose"):
            assert traced[pid][key] == pytest.approx(row[key], abs=1e-6), (pid, key)

    # the check can fail: the same weights scored through accelerate's autocast wrapper give other numbers
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    wrapped = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(final)
    AcceleratorState._reset_state(reset_partial_state=True)  # later trainers set up their own
    assert "_original_forward" in wrapped.__dict__
    in_bf16 = {r["probe_id"]: r for r in scorer.score(wrapped, probes)}
    assert max(abs(in_bf16[p]["ll_neutral"] - reloaded[p]["ll_neutral"]) for p in reloaded) > 1e-5
    with full_precision(wrapped):
        again = {r["probe_id"]: r for r in scorer.score(wrapped, probes)}
    assert all(again[p]["ll_neutral"] == pytest.approx(reloaded[p]["ll_neutral"], abs=1e-6) for p in reloaded)
    assert "_original_forward" in wrapped.__dict__ and wrapped.forward is not wrapped._original_forward  # restored
