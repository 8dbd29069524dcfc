"""Scale knobs without training a traced run: epochs → optimizer steps (against transformers' own count),
fractional checkpoint cadence, the validation of max_steps / num_train_epochs / eval_every / peft /
attn_implementation, precision from model.dtype, the unpinned-revision warning, and the params.yaml
examples of the new keys."""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import yaml

from valuedrift.adapters import master_dtype, quantization_config
from valuedrift.algorithms.registry import ALGORITHMS
from valuedrift.config.load import UnpinnedRevisionWarning, parse_params
from valuedrift.config.schema.models import ModelConfig
from valuedrift.config.schema.training import AdapterConfig, TrainConfig, optimizer_steps
from valuedrift.core.errors import ConfigError
from valuedrift.core.rundir import RunDir
from valuedrift.reporting.markdown import schedule_text
from valuedrift.train.scaffold import training_kwargs

from .conftest import ROOT, tiny_params_dict

SHIPPED = (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize(
    ("n", "batch", "accum", "epochs"),
    [(10, 3, 2, 1.0), (10, 3, 2, 1.5), (7, 2, 3, 2.0), (5, 8, 1, 0.5), (9, 2, 1, 0.3)],
)
def test_optimizer_steps_is_what_transformers_trains(n, batch, accum, epochs, tiny_model_dir, tmp_path, one_thread):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    data = Dataset.from_list([{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}] * n)
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        save_strategy="no", logging_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    assert trainer.state.global_step == trainer.state.max_steps == optimizer_steps(n, batch, accum, epochs)


def test_optimizer_steps_formula():
    assert optimizer_steps(100, 4, 1, 1.0) == 25
    assert optimizer_steps(100, 4, 2, 1.0) == 13  # 25 batches: 12 full accumulation windows and a partial one
    assert optimizer_steps(100, 4, 1, 2.5) == 63
    assert optimizer_steps(100, 4, 1, 1.0, world_size=2) == 13
    assert optimizer_steps(3, 8, 4, 1.0) == 1  # never 0
    with pytest.raises(ValueError):
        optimizer_steps(0, 4, 1, 1.0)


def test_total_steps_and_eval_interval():
    by_steps = TrainConfig(max_steps=30, eval_every=8)
    assert by_steps.total_steps(n_examples=10_000) == 30 and by_steps.eval_interval(30) == 8
    by_epochs = TrainConfig(max_steps=None, num_train_epochs=2.0, batch_size=4, grad_accum=2, eval_every=0.25)
    total = by_epochs.total_steps(n_examples=100)
    assert total == 26 and by_epochs.eval_interval(total) == 7  # ceil(0.25 × 26)
    assert TrainConfig(eval_every=1.0).eval_interval(12) == 12  # 1.0: the phase ends only
    assert TrainConfig(eval_every=0.01).eval_interval(12) == 1


def test_examples_per_epoch_follow_what_batch_size_counts():
    assert ALGORITHMS["dpo"].examples(64, {}) == 64  # a pair is one example
    assert ALGORITHMS["kto"].examples(64, {}) == 128  # chosen and rejected rows
    hp = ALGORITHMS["rm_rloo"].resolve_hparams({"num_generations": 4}, "po.hparams.rm_rloo")
    assert ALGORITHMS["rm_rloo"].examples(64, hp) == 256  # batch_size counts sampled completions


def _parse(mutate) -> None:
    p = tiny_params_dict()
    mutate(p)
    parse_params(p)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda p: p["sft"].update(num_train_epochs=2), "sft.num_train_epochs"),  # max_steps is still set
        (lambda p: p["po"].update(max_steps=None), "po.max_steps"),  # neither
        (lambda p: p["po"].update(max_steps=None, num_train_epochs=0), "po.num_train_epochs"),
        (lambda p: p["sft"].update(eval_every=1.5), "sft.eval_every"),
        (lambda p: p["sft"].update(eval_every=0.0), "sft.eval_every"),
        (lambda p: p["sft"].update(eval_every="quarter"), "sft.eval_every"),
        (lambda p: p["sft"].update(peft={"r": 0}), "sft.peft.r"),
        (lambda p: p["po"].update(peft={"dropout": 1.0}), "po.peft.dropout"),
        (lambda p: p["po"].update(peft={"target_modules": "q_proj"}), "po.peft.target_modules"),
        (lambda p: p["po"].update(peft={"target_modules": []}), "po.peft.target_modules"),
        (lambda p: p["po"].update(peft={"quantize": "2bit"}), "po.peft.quantize"),
        (lambda p: p["po"].update(peft={"rank": 8}), "po.peft.rank"),
        (lambda p: (p["sft"].update(peft={"quantize": "4bit"}), p["model"].update(device="cpu")), "sft.peft.quantize"),
        (lambda p: p["model"].update(attn_implementation="flash"), "model.attn_implementation"),
        (lambda p: p["sft"].update(mixed_precision="fp8"), "sft.mixed_precision"),
        (lambda p: (p["sft"].update(mixed_precision=None), p["model"].update(dtype="float16")), "po.mixed_precision"),
        (lambda p: p["model"].update(attn_implementation="flash_attention_2"), "model.attn_implementation"),  # float32
        (lambda p: (p["po"].update(max_steps=None, num_train_epochs=1.0), p["tune"]["space"].update(steps={"choices": [4, 8]})),
         "tune.space.steps"),
    ],
)
def test_invalid_scale_settings_name_the_key(mutate, key):
    with pytest.raises(ConfigError) as e:
        _parse(mutate)
    assert e.value.key == key, str(e.value)


def test_valid_scale_settings_parse():
    p = tiny_params_dict()
    p["sft"].update(max_steps=None, num_train_epochs=1.5, eval_every=0.25, peft={"r": 8, "target_modules": ["q_proj", "v_proj"]})
    p["model"].update(attn_implementation="sdpa")
    params = parse_params(p)
    assert params.sft.eval_every == 0.25 and isinstance(params.sft.eval_every, float)
    assert isinstance(params.po.eval_every, int)  # an integer stays a step count
    assert params.sft.peft == AdapterConfig(r=8, target_modules=["q_proj", "v_proj"])


def test_params_yaml_documents_the_new_keys_with_examples_that_parse():
    shipped = yaml.safe_load(SHIPPED)
    for section in ("sft", "po"):
        assert shipped[section]["peft"] is None and shipped[section]["num_train_epochs"] is None
    assert shipped["model"]["attn_implementation"] is None
    examples = re.findall(r"^\s*# peft: (\{.*\})\s*$", SHIPPED, flags=re.M)
    assert len(examples) == 2, "a commented peft example under sft and under po"
    p = tiny_params_dict()
    for section, example in zip(("sft", "po"), examples, strict=True):
        p[section]["peft"] = yaml.safe_load(example)
    params = parse_params(p)
    assert params.sft.peft == params.po.peft == AdapterConfig()


def test_hub_id_without_revision_warns_naming_the_key():
    p = tiny_params_dict(model="Qwen/Qwen3-4B-Base")
    with pytest.warns(UnpinnedRevisionWarning, match=r"model\.revision"):
        parse_params(copy.deepcopy(p))
    p["model"]["revision"] = "0123456789abcdef"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedRevisionWarning)
        parse_params(p)
        parse_params(tiny_params_dict())  # a bundled model: nothing to pin


def test_precision_follows_model_dtype(tmp_path):
    cfg, run = TrainConfig(max_steps=10, eval_every=0.5), RunDir(tmp_path)
    kw = training_kwargs(cfg, 0, "bfloat16", "cpu", run, total_steps=10)
    assert kw["bf16"] and not kw["fp16"] and kw["max_steps"] == 10 and kw["save_steps"] == 5
    kw = training_kwargs(cfg, 0, "float16", "cpu", run, total_steps=10)
    assert kw["fp16"] and not kw["bf16"]
    assert not any(training_kwargs(cfg, 0, "float32", "cpu", run, total_steps=10)[k] for k in ("bf16", "fp16"))
    autocast = TrainConfig(max_steps=10, mixed_precision="bf16")  # bf16 autocast of float32 weights
    kw = training_kwargs(autocast, 0, "float32", "cpu", run, total_steps=10)
    assert kw["bf16"] and not kw["fp16"]
    # fp16 mixed precision keeps float32 master weights for full fine-tuning; bf16 and adapters keep model.dtype
    assert master_dtype(ModelConfig(dtype="float16"), None) == "float32"
    assert master_dtype(ModelConfig(dtype="float16"), AdapterConfig()) == "float16"
    assert master_dtype(ModelConfig(dtype="bfloat16"), None) == "bfloat16"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_implementation_reaches_from_pretrained(attn, tiny_model_dir):
    from valuedrift.models import load_configured

    model = load_configured(tiny_model_dir, ModelConfig(name=str(tiny_model_dir), attn_implementation=attn, device="cpu"))
    assert model.config._attn_implementation == attn


def test_qlora_without_a_gpu_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: QLoRA may run here")
    with pytest.raises(ConfigError) as e:
        quantization_config(AdapterConfig(quantize="4bit"), "bfloat16", "auto", "po.peft")
    assert e.value.key == "po.peft.quantize" and "CUDA" in str(e.value)
    assert quantization_config(AdapterConfig(), "bfloat16", "auto", "po.peft") is None


def test_report_describes_the_schedule():
    assert schedule_text(TrainConfig(max_steps=16, eval_every=8)) == ("16 steps", "every 8 steps")  # as before
    length, cadence = schedule_text(TrainConfig(max_steps=None, num_train_epochs=2, eval_every=0.25, peft=AdapterConfig(r=8)))
    assert length == "2 epochs (LoRA r 8, alpha 32)" and cadence == "every 25% of training"
