"""LoRA training (``sft.peft`` / ``po.peft``) on the tiny random model, trained by epochs with a fractional
checkpoint cadence: only the adapter trains, the stance tracer scores the adapted model, the exported
``final/`` is a plain model equal to base + merged adapter, and every preference algorithm of the registry
trains an adapter against the adapter-disabled reference."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from valuedrift.algorithms.registry import ALGORITHMS
from valuedrift.config.load import parse_params
from valuedrift.config.schema.training import optimizer_steps
from valuedrift.core.io import read_records
from valuedrift.core.paths import corpus_file
from valuedrift.core.rundir import RunDir
from valuedrift.stages import preferences, prepare_data
from valuedrift.train.po import run_po
from valuedrift.train.sft import run_sft

from .conftest import ROOT, fresh_mlflow_uri, tiny_params_dict
from .test_algorithms import PREF_SET, tiny_po_params

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
EPOCHS = 0.02  # of the tiny SFT corpus at batch 2: a few steps


class Snapshot(TrainerCallback):
    """The trainer's in-memory model at the start and at the end of training (what the tracer is handed)."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.model_class = ""

    @staticmethod
    def _copy(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.before, self.model_class = self._copy(model), type(model).__name__

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after = self._copy(model)


def base_name(peft_name: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`` -> the plain model's key."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


@pytest.fixture(scope="module")
def lora_sft(tmp_path_factory, tiny_model_dir, empty_mlflow_db):
    tmp = tmp_path_factory.mktemp("lora_sft")
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["eval"]["capability_rows"] = 0
    # a large learning rate, so that the adapter moves the stances measurably in a few steps
    p["sft"].update(max_steps=None, num_train_epochs=EPOCHS, eval_every=0.5, learning_rate=1e-2, peft=LORA)
    snap = Snapshot()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp / "mlflow", empty_mlflow_db))
        params = parse_params(p)
        processed = tmp / "processed"
        prepare_data.main(["--out", str(processed)])
        run_dir = run_sft(params, tiny_model_dir, processed, tmp / "runs", callbacks=[snap], start_eval=None)
    n_rows = len(read_records(corpus_file(processed, params.po.start_from), lambda obj, path, line: obj))
    return run_dir, params, snap, n_rows


def test_only_the_adapter_trains_and_base_weights_stay_bit_identical(lora_sft, tiny_model_dir):
    _, _, snap, _ = lora_sft
    assert snap.model_class.startswith("PeftModel"), f"the trainer trained a {snap.model_class}, not a peft model"
    changed = {n for n in snap.before if not torch.equal(snap.before[n], snap.after[n])}
    lora = {n for n in snap.before if "lora_" in n}
    assert lora and changed and changed <= lora, f"non-adapter weights changed: {sorted(changed - lora)[:5]}"
    assert any("lora_B" in n for n in changed), "lora_B never moved: the adapter did not train"
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    base = {base_name(n): t for n, t in snap.after.items() if "lora_" not in n}
    assert set(base) == set(original)
    assert all(torch.equal(original[k], t) for k, t in base.items()), "a base weight differs from the start model"


def test_epochs_and_fractional_cadence_set_the_step_axis(lora_sft):
    run_dir, params, _, n_rows = lora_sft
    cfg = params.sft
    total = optimizer_steps(n_rows, cfg.batch_size, cfg.grad_accum, EPOCHS)
    every = math.ceil(0.5 * total)
    assert total >= 2 and cfg.total_steps(n_rows) == total and cfg.eval_interval(total) == every
    steps = [c["step"] for c in json.loads((run_dir / "trajectory.json").read_text())["checkpoints"]]
    assert steps == sorted({0, *range(every, total, every), total})
    log = json.loads((run_dir / "train_log.json").read_text())["log_history"]
    assert max(r["step"] for r in log if "loss" in r) == total
    assert RunDir(run_dir).complete(total)  # so a rerun with the same inputs trains nothing


def _table(run_dir: Path, step: int) -> dict[str, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "evals" / f"step_{step:06d}.jsonl").read_text().splitlines()]
    return {r["probe_id"]: r for r in rows}


def test_the_tracer_scored_the_adapted_model(lora_sft):
    run_dir, params, _, _ = lora_sft
    steps = [c["step"] for c in json.loads((run_dir / "trajectory.json").read_text())["checkpoints"]]
    first, last = _table(run_dir, 0), _table(run_dir, steps[-1])
    moved = [abs(last[p]["ll_support"] - first[p]["ll_support"]) for p in first if p in last]
    assert moved and max(moved) > 1e-3, "the last checkpoint scored like step 0: the tracer did not see the adapter"

    # and what it scored at the end is the exported (merged) model
    from valuedrift.data.probes import load_probe_bank
    from valuedrift.models import load_tokenizer
    from valuedrift.stance.likelihood import LikelihoodScorer

    ev = params.eval
    tok = load_tokenizer(run_dir / "final")
    scorer = LikelihoodScorer(tok, ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)
    probes = [p for p in load_probe_bank(ROOT / "data") if p.id in last]
    final = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    rescored = {r["probe_id"]: r for r in scorer.score(final, probes)}
    assert len(rescored) == len(last)
    for pid, row in rescored.items():
        assert row["ll_support"] == pytest.approx(last[pid]["ll_support"], abs=1e-4)


def test_final_is_a_plain_model_and_the_adapter_is_kept(lora_sft, tiny_model_dir):
    run_dir, _, _, _ = lora_sft
    final, adapter = run_dir / "final", run_dir / "adapter"
    assert not (final / "adapter_config.json").exists()
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    merged = load_file(str(final / "model.safetensors"))
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(merged) == set(original), "the exported model has other tensors than the start model"
    changed = {k for k in original if not torch.equal(original[k], merged[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed), sorted(changed)  # only adapted linears

    from peft import PeftModel

    plain = AutoModelForCausalLM.from_pretrained(final)
    assert type(plain).__name__ == "LlamaForCausalLM"
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    ids = torch.tensor([[1, 5, 9, 17, 33, 65]])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


# --- preference optimisation with adapters ------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_prefs(tmp_path_factory, tiny_model_dir, empty_mlflow_db):
    tmp = tmp_path_factory.mktemp("lora_po")
    p = tiny_po_params(str(tiny_model_dir))
    p["po"]["hparams"]["dpo"] = {"beta": 0.1, "loss_type": ["sigmoid"]}
    p["po"]["peft"] = LORA
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        preferences.main(["--params", str(params_file), "--out", str(tmp / "processed"), "--set", PREF_SET,
                          "--sft-run", str(tmp / "no_sft_run")])
    return tmp, p, fresh_mlflow_uri(tmp / "mlflow", empty_mlflow_db)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_trains_an_adapter(algorithm, lora_prefs, tiny_model_dir, tmp_path, monkeypatch):
    tmp, p, uri = lora_prefs
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    snap = Snapshot()
    run_dir = run_po(parse_params(p), tiny_model_dir, tmp / "processed", tmp_path / "runs", algorithm, PREF_SET, callbacks=[snap])
    assert snap.model_class.startswith("PeftModel")
    changed = {n for n in snap.before if not torch.equal(snap.before[n], snap.after[n])}
    assert changed and all("lora_" in n for n in changed), f"{algorithm}: non-adapter weights changed"
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert not (run_dir / "final" / "adapter_config.json").exists()
    assert type(AutoModelForCausalLM.from_pretrained(run_dir / "final")).__name__ == "LlamaForCausalLM"
    log = json.loads((run_dir / "train_log.json").read_text())["log_history"]
    first = next(r for r in log if "loss" in r and r["step"] == 1)
    if algorithm == "dpo":
        # at step 1 the adapter is zero, so policy = reference (the adapter-disabled model): −log σ(0) = log 2
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    if ALGORITHMS[algorithm].needs_reward_model:
        reward = run_dir / "reward"
        assert (reward / "adapter" / "adapter_model.safetensors").exists()
        assert not (reward / "reward_model" / "adapter_config.json").exists()  # the policy phase loads it plain
        trained_head = load_file(str(reward / "adapter" / "adapter_model.safetensors"))["base_model.model.score.weight"]
        assert torch.equal(load_file(str(reward / "reward_model" / "model.safetensors"))["score.weight"], trained_head)


def test_an_interrupted_lora_run_resumes_with_its_adapter(lora_prefs, tiny_model_dir, tmp_path, monkeypatch):
    from .test_resume import FirstStep, InterruptBeforeStep, Interrupted

    tmp, p, uri = lora_prefs
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p = copy.deepcopy(p)
    p["po"].update(max_steps=4, eval_every=2)
    params, out = parse_params(p), tmp_path / "runs"
    with pytest.raises(Interrupted):
        run_po(params, tiny_model_dir, tmp / "processed", out, "dpo", PREF_SET, callbacks=[InterruptBeforeStep(4)])
    ckpt = out / f"dpo-{PREF_SET}" / "checkpoints" / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()  # adapter-only

    first, snap = FirstStep(), Snapshot()
    run_dir = run_po(params, tiny_model_dir, tmp / "processed", out, "dpo", PREF_SET, callbacks=[first, snap])
    assert first.start == 2
    # the resumed model starts from the checkpoint's adapter, not a fresh (zero lora_B) one
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in snap.before.items())
    assert [c["step"] for c in json.loads((run_dir / "trajectory.json").read_text())["checkpoints"]] == [0, 2, 4]
    assert (run_dir / "final" / "model.safetensors").exists() and not (run_dir / "checkpoints").exists()
