"""Registry of preference-optimisation algorithms: one entry per algorithm, each declaring its needs.

An :class:`Algorithm` says whether it needs a frozen reference model, paired (prompt, chosen, rejected)
or unpaired (prompt, completion, label) data, and a learned reward model; which hyperparameters it
accepts (with defaults and ranges, checked before any model loads); and how to build its TRL trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class DataKind(str, Enum):
    PAIRED = "paired"  # prompt, chosen, rejected
    UNPAIRED = "unpaired"  # prompt, completion, label (KTO)


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: default, and a numeric range or a set of choices (a list value: each item)."""

    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def check(self, key: str, value: Any) -> Any:
        from valuedrift.config import ConfigError

        items = value if isinstance(self.default, list) else [value]
        if isinstance(self.default, list) and not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        for v in items:
            if self.choices is not None:
                if v not in self.choices:
                    raise ConfigError(key, f"{v!r} is not one of {', '.join(map(str, self.choices))}")
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(key, f"expected a number, got {v!r}")
            if self.low is not None and v <= self.low:
                raise ConfigError(key, f"must be > {self.low}, got {v}")
            if self.high is not None and v > self.high:
                raise ConfigError(key, f"must be <= {self.high}, got {v}")
        return value


@dataclass
class BuildContext:
    """Everything a trainer builder needs."""

    model: Any
    tokenizer: Any
    dataset: Any
    train_kwargs: dict[str, Any]
    hparams: dict[str, Any]
    max_length: int
    callbacks: list[Any]
    run_dir: Any = None
    params: Any = None


@dataclass(frozen=True)
class Algorithm:
    name: str
    description: str
    needs_reference_model: bool
    data: DataKind
    needs_reward_model: bool
    build: Callable[[BuildContext], Any]
    hparams: dict[str, HParam] = field(default_factory=dict)
    experimental: bool = False

    def resolve_hparams(self, given: dict[str, Any] | None, key: str) -> dict[str, Any]:
        """Defaults overlaid with ``given``; an unknown name or bad value raises ConfigError at ``key``."""
        from valuedrift.config import ConfigError

        out = {k: h.default for k, h in self.hparams.items()}
        for k, v in (given or {}).items():
            if k not in self.hparams:
                raise ConfigError(f"{key}.{k}", f"unknown hyperparameter for {self.name}; allowed: {', '.join(self.hparams)}")
            out[k] = self.hparams[k].check(f"{key}.{k}", v)
        return out


DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_pair",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
)


def _build_dpo(ctx: BuildContext) -> Any:
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**ctx.train_kwargs, max_length=ctx.max_length, **ctx.hparams)
    return DPOTrainer(
        model=ctx.model, args=args, train_dataset=ctx.dataset, processing_class=ctx.tokenizer, callbacks=ctx.callbacks
    )


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm(
        name="dpo",
        description="Direct Preference Optimisation (TRL DPOTrainer); any list of DPOConfig.loss_type",
        needs_reference_model=True,
        data=DataKind.PAIRED,
        needs_reward_model=False,
        build=_build_dpo,
        hparams={
            "beta": HParam(0.1, low=0.0, doc="β: KL strength / implicit reward temperature"),
            "loss_type": HParam(["sigmoid"], choices=DPO_LOSSES, doc="DPOConfig.loss_type list"),
        },
    ),
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise KeyError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
