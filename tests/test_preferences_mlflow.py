"""A preference run records its preference set in MLflow: the dataset as a run input (with its digest), the
generator parameters and resolved target as params, and the gap analysis as params and artifacts.
A real DPO run (1 step, tiny model) on a set made by the real preferences stage, in a SQLite store."""

from __future__ import annotations

import json

import mlflow
import pytest
import yaml

from valuedrift.config.load import parse_params
from valuedrift.stages import preferences as stage
from valuedrift.train.po import run_po

from .conftest import DATA, ROOT, tiny_params_dict


def test_po_run_logs_the_preference_set(tmp_path, tiny_model_dir, mlflow_uri, monkeypatch):
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["eval"].update(capability_rows=0, splits=["test"], trace_probes_per_topic=1, phase_probes_per_topic=1)
    p["po"].update(max_steps=1, eval_every=1, algorithms=["dpo"], preference_sets=["value_gap"])
    p["prepare_data"]["preference_sets"]["value_gap"].update(target="support", gap=0.75, pairs=8, topics=["climate"])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    processed = tmp_path / "processed"
    stage.main(["--params", str(params_file), "--data", str(DATA), "--out", str(processed), "--set", "value_gap",
                "--sft-run", str(tmp_path / "no_sft")])
    monkeypatch.chdir(ROOT)
    run_dir = run_po(parse_params(p), tiny_model_dir, processed, tmp_path / "runs", "dpo", "value_gap")

    client = mlflow.tracking.MlflowClient(mlflow_uri)
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["preferences/value_gap", "v_prism probes"]  # training, evaluation
    assert inputs[0].dataset.digest and inputs[0].dataset.source_type == "local"
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]
    logged = run.data.params
    meta = json.loads((processed / "preferences" / "value_gap.gap.json").read_text())
    assert logged["pref.target"] == "support" and logged["pref.condition"] == "support"
    assert logged["pref.gap"] == "0.75" and logged["pref.pairs"] == "8" and logged["pref.topics"] == "climate"
    assert logged["pref.generator"] == "bank" and logged["pref.gap_styles"] == "brief,reasoned,conversational"
    assert logged["pref.data_sha256"] == meta["data_sha256"]
    assert float(logged["pref.gap.support"]) == pytest.approx(0.75) == pytest.approx(meta["gap"]["support"])
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "preferences")}
    assert arts == {f"preferences/value_gap.gap.{ext}" for ext in ("csv", "json", "png")}
