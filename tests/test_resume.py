"""A preference run interrupted mid-training resumes from its last checkpoint on the rerun, and MLflow
holds every (metric, step) once. (The kill -9 variant is in the reliability tests.)"""

from __future__ import annotations

import mlflow
import pytest
from transformers import TrainerCallback

from valuedrift.config.load import parse_params
from valuedrift.train.po import run_po

from .test_algorithms import PREF_SET, pref_data, tiny_po_params  # noqa: F401 - pref_data is a fixture


class Interrupted(RuntimeError):
    pass


class InterruptBeforeStep(TrainerCallback):
    """Raise when step ``n`` is about to start: steps < n are trained and logged, the last checkpoint is older."""

    def __init__(self, n: int):
        self.n = n

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.n - 1:
            raise Interrupted(f"interrupted before step {self.n}")


class FirstStep(TrainerCallback):
    """Records the global step training starts from."""

    def __init__(self):
        self.start: int | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = state.global_step


def test_rerun_resumes_from_last_checkpoint_without_duplicate_steps(pref_data, tiny_model_dir, tmp_path, mlflow_uri, monkeypatch):  # noqa: F811
    from .conftest import ROOT

    monkeypatch.chdir(ROOT)
    p = tiny_po_params(str(tiny_model_dir))
    p["po"].update(max_steps=4, eval_every=2)  # checkpoints (and stance scores) at 2 and 4
    params = parse_params(p)
    out = tmp_path / "runs"

    with pytest.raises(Interrupted):
        run_po(params, tiny_model_dir, pref_data, out, "dpo", PREF_SET, callbacks=[InterruptBeforeStep(4)])
    run_dir = out / f"dpo-{PREF_SET}"
    assert sorted(c.name for c in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).info.status == "FAILED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2, 3]  # step 3 is logged

    first = FirstStep()
    run_po(params, tiny_model_dir, pref_data, out, "dpo", PREF_SET, callbacks=[first])
    assert first.start == 2, "the rerun did not resume from checkpoint-2"
    assert (run_dir / "mlflow_run_id").read_text().strip() == run_id, "the rerun opened a new MLflow run"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2, 3, 4]
    assert sorted(m.step for m in client.get_metric_history(run_id, "stance/all/support")) == [0, 2, 4]
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {sorted(steps)}"
