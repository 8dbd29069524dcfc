"""LoRA / QLoRA adapters (``peft``): ``sft.peft`` / ``po.peft`` turned into what the TRL trainers take, the
quantized (QLoRA) load of the frozen base, and the export of a trained adapter as a plain model folder.

A run with ``peft`` set hands :func:`lora_config` to its trainer as ``peft_config=``: TRL wraps the model
in a ``PeftModel`` (only the ``lora_`` weights train; the base weights stay bit-identical), and trainers
with a reference model (DPO, KTO, the KL anchor of reward-model RL) compute it with the adapter disabled.
The stance tracer is handed the trainer's model, the ``PeftModel``, so it scores the adapted weights.

Every model folder another stage loads stays a plain Hugging Face model: :func:`save_trained` writes the
adapter to ``<run>/adapter`` and the merged weights W + (alpha / r)·B·A (``merge_and_unload`` on a fresh,
unquantized copy of the start model) to ``<run>/final``.

Layer: below ``algorithms`` and ``train`` (both build trainers with it), above ``models``. peft, torch and
transformers are imported where they are used.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from valuedrift.config.schema.models import ModelConfig
from valuedrift.config.schema.training import AdapterConfig, TrainConfig
from valuedrift.core.errors import check
from valuedrift.core.processes import is_main_process, wait_for_everyone
from valuedrift.models import load_model, pick_device

log = logging.getLogger(__name__)

CAUSAL_LM = "CAUSAL_LM"  # the policy (every trainer but the reward model's)
SEQ_CLS = "SEQ_CLS"  # the reward model: peft also trains (and saves) its new score head


def lora_config(cfg: AdapterConfig | None, task_type: str = CAUSAL_LM) -> Any:
    """The ``peft.LoraConfig`` of ``cfg`` (None = full fine-tuning: None)."""
    if cfg is None:
        return None
    from peft import LoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none", task_type=task_type
    )


def quantization_config(cfg: AdapterConfig | None, dtype: str, device: str, key: str) -> Any:
    """The ``BitsAndBytesConfig`` of ``cfg.quantize`` (None when unquantized).

    Raises ConfigError at ``<key>.quantize`` when no CUDA device is used here (``model.device`` cpu or mps,
    or ``auto`` on a machine without a GPU) or bitsandbytes is not installed. 4bit is NF4 with double
    quantisation, computing in ``dtype``; 8bit is LLM.int8().
    """
    if cfg is None or cfg.quantize is None:
        return None
    where = pick_device(device)
    check(
        where.startswith("cuda"),
        f"{key}.quantize",
        f"QLoRA ({cfg.quantize}, bitsandbytes) needs a CUDA device, but model.device {device!r} is {where!r} here: "
        "run on a GPU, or set quantize: null (plain LoRA)",
    )
    check(
        importlib.util.find_spec("bitsandbytes") is not None,
        f"{key}.quantize",
        "QLoRA needs bitsandbytes: pip install -e '.[qlora]'",
    )
    import torch
    from transformers import BitsAndBytesConfig

    if cfg.quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def quantized_load_kwargs(quantization: Any, device: Any) -> dict[str, Any]:
    """``from_pretrained`` keywords that load quantized onto ``device`` (a quantized model cannot be moved
    with ``.to()`` afterwards); none when ``quantization`` is None."""
    if quantization is None:
        return {}
    return {"quantization_config": quantization, "device_map": {"": str(device)}}


def master_dtype(model_cfg: ModelConfig, adapter: AdapterConfig | None) -> str:
    """The dtype the trained weights are held in.

    ``model.dtype`` (bf16 training keeps bf16 weights), except float16 with full fine-tuning: fp16 mixed
    precision needs float32 master weights (its gradient scaler refuses to unscale fp16 gradients), so the
    model loads in float32 and the forward runs in fp16 autocast (``fp16=True``); the tracer then scores
    the float32 weights and ``final/`` is saved in float32 (later stages load it in float16 again). With an
    adapter the frozen base stays in float16 and peft keeps the adapter in float32.
    """
    return "float32" if model_cfg.dtype == "float16" and adapter is None else model_cfg.dtype


def load_trainable(path: str | Path, model_cfg: ModelConfig, train: TrainConfig, key: str) -> Any:
    """The start model of a training run: ``model.*`` settings (dtype per :func:`master_dtype`, device,
    ``attn_implementation``); with ``<key>.quantize`` loaded quantized and prepared for k-bit training
    (norms in float32, input gradients on for gradient checkpointing). ``key`` is the section's ``peft`` key."""
    quant = quantization_config(train.peft, model_cfg.dtype, model_cfg.device, key)
    model = load_model(
        path, master_dtype(model_cfg, train.peft), model_cfg.device, model_cfg.trust_remote_code,
        attn_implementation=model_cfg.attn_implementation,
        **quantized_load_kwargs(quant, pick_device(model_cfg.device)),
    )
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
    return model


def is_adapted(model: Any) -> bool:
    """Whether ``model`` is a peft-wrapped model (a run with adapters)."""
    if importlib.util.find_spec("peft") is None:
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merge_adapter(base: Any, adapter_dir: str | Path) -> Any:
    """``base`` with the adapter in ``adapter_dir`` merged in (each adapted W becomes W + (alpha / r)·B·A):
    a plain transformers model again."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def save_trained(trainer: Any, out: Path, adapter_dir: Path, load_base: Callable[[], Any]) -> None:
    """Save ``trainer``'s model to ``out`` as a plain Hugging Face model folder; every rank calls it.

    Full fine-tuning: ``trainer.save_model(out)``. With an adapter: the adapter alone to ``adapter_dir``
    (what ``trainer.save_model`` writes for a peft model), then, on the main process, the adapter merged
    into ``load_base()`` (a fresh unquantized copy of the start model) to ``out``.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not is_adapted(model):
        trainer.save_model(str(out))
        return
    trainer.save_model(str(adapter_dir))
    if is_main_process():
        log.info("merging the adapter %s into the start model: %s", adapter_dir, out)
        merge_adapter(load_base(), adapter_dir).save_pretrained(str(out))
    wait_for_everyone(trainer.args.use_cpu)
