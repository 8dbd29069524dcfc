"""TRL trainer builders, one per algorithm of the registry (TRL is imported when a trainer is built).

Every trainer takes ``peft_config=`` (``po.peft``; None = full fine-tuning): with an adapter, DPO and KTO
compute their reference log-probabilities with the adapter disabled, i.e. from the start model.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from valuedrift.adapters import lora_config
from valuedrift.algorithms.base import BuildContext


def _common_args(ctx: BuildContext) -> dict[str, Any]:
    return {**ctx.train_kwargs, "max_length": ctx.max_length}


def _trainer_kwargs(ctx: BuildContext) -> dict[str, Any]:
    """What every preference trainer takes besides its config: model, data, tokenizer, callbacks, adapter."""
    return {
        "model": ctx.model, "train_dataset": ctx.dataset, "processing_class": ctx.tokenizer, "callbacks": ctx.callbacks,
        "peft_config": lora_config(ctx.adapter),
    }


def build_dpo(ctx: BuildContext) -> Any:
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**_common_args(ctx), **ctx.hparams)
    return DPOTrainer(args=args, **_trainer_kwargs(ctx))


def _experimental(module: str) -> Any:
    """Import a ``trl.experimental`` module without its TRLExperimentalWarning (the registry flags it)."""
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        return importlib.import_module(module)


def build_simpo(ctx: BuildContext) -> Any:
    cpo = _experimental("trl.experimental.cpo")
    hp = ctx.hparams
    args = cpo.CPOConfig(
        **_common_args(ctx), loss_type="simpo", cpo_alpha=0.0, beta=hp["beta"], simpo_gamma=hp["gamma"]
    )
    return cpo.CPOTrainer(args=args, **_trainer_kwargs(ctx))


def build_orpo(ctx: BuildContext) -> Any:
    orpo = _experimental("trl.experimental.orpo")
    args = orpo.ORPOConfig(**_common_args(ctx), beta=ctx.hparams["beta"])
    return orpo.ORPOTrainer(args=args, **_trainer_kwargs(ctx))


def build_kto(ctx: BuildContext) -> Any:
    from trl import KTOConfig, KTOTrainer

    args = KTOConfig(**_common_args(ctx), **ctx.hparams)
    return KTOTrainer(args=args, **_trainer_kwargs(ctx))
