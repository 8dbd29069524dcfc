"""``sft.padding_free`` on the tiny model: the batches really are one flat sequence, the first step's loss is
the padded batch's loss (no row attends to another), and a row longer than ``sft.max_length`` is a config error
naming the key before any step is trained."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import TrainerCallback

from valuedrift.config.load import parse_params
from valuedrift.core.errors import ConfigError
from valuedrift.stages import prepare_data
from valuedrift.train.sft import run_sft

from .conftest import ROOT, tiny_params_dict


class FirstStep(TrainerCallback):
    """The collator's padding-free flag, the first batch's shape and the first logged loss."""

    def __init__(self) -> None:
        self.padding_free: bool | None = None
        self.loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kw: Any) -> None:
        self.padding_free = train_dataloader.collate_fn.padding_free
        batch = next(iter(train_dataloader))
        self.shape = tuple(batch["input_ids"].shape)
        self.has_positions = "position_ids" in batch

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if logs and "loss" in logs and self.loss is None:
            self.loss = float(logs["loss"])


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    out = tmp_path_factory.mktemp("pf") / "processed"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        prepare_data.main(["--out", str(out)])
    return out


def _train(tmp_path, tiny_model_dir, processed, monkeypatch, **sft) -> FirstStep:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    p = tiny_params_dict(model=str(tiny_model_dir))
    # float32 both ways, so the losses compare to float rounding; one step, scored at the phase ends only
    p["sft"].update(max_steps=1, eval_every=1, mixed_precision=None, **sft)
    p["eval"].update(capability_rows=0)
    clock = FirstStep()
    run_sft(parse_params(p), tiny_model_dir, processed, tmp_path / "runs", callbacks=[clock], start_eval=None)
    return clock


def test_padding_free_batches_train_the_padded_loss(tmp_path, tiny_model_dir, processed, monkeypatch):
    free = _train(tmp_path / "free", tiny_model_dir, processed, monkeypatch, padding_free=True, max_length=320)
    padded = _train(tmp_path / "padded", tiny_model_dir, processed, monkeypatch, padding_free=False, max_length=320)
    assert free.padding_free and not padded.padding_free
    assert free.shape[0] == 1 and free.has_positions  # the batch's rows flattened into one sequence
    assert padded.shape[0] == 2
    assert free.shape[1] < padded.shape[0] * padded.shape[1]  # fewer positions than the padded batch
    assert free.loss == pytest.approx(padded.loss, abs=1e-4)


def test_a_row_longer_than_max_length_names_the_key(tmp_path, tiny_model_dir, processed, monkeypatch):
    with pytest.raises(ConfigError, match=r"sft\.padding_free: false") as e:
        _train(tmp_path, tiny_model_dir, processed, monkeypatch, padding_free=True, max_length=64)
    assert e.value.key == "sft.max_length" and "the longest" in str(e.value)
    assert not (tmp_path / "runs" / "neutral_heavy" / "final").exists()
