"""The shape of a registry entry: what an algorithm needs, accepts and builds (no TRL import here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from valuedrift.config.schema.training import AdapterConfig
from valuedrift.core.errors import ConfigError


class DataKind(str, Enum):
    PAIRED = "paired"  # prompt, chosen, rejected
    UNPAIRED = "unpaired"  # prompt, completion, label (KTO)


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: default, and a numeric range or a set of choices (a list value: each item).

    Numeric ranges are ``low < v <= high`` (``low <= v`` with ``low_inclusive``); an integer default
    makes the value an integer.
    """

    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""
    low_inclusive: bool = False

    def check(self, key: str, value: Any) -> Any:
        items = value if isinstance(self.default, list) else [value]
        if isinstance(self.default, list) and not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        if isinstance(self.default, list) and not value:
            raise ConfigError(key, "must list at least one value")
        integer = isinstance(self.default, int) and not isinstance(self.default, bool)
        for v in items:
            if self.choices is not None:
                if v not in self.choices:
                    raise ConfigError(key, f"{v!r} is not one of {', '.join(map(str, self.choices))}")
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(key, f"expected a number, got {v!r}")
            if integer and not isinstance(v, int):
                raise ConfigError(key, f"expected an integer, got {v!r}")
            if self.low is not None and (v < self.low if self.low_inclusive else v <= self.low):
                raise ConfigError(key, f"must be {'>=' if self.low_inclusive else '>'} {self.low}, got {v}")
            if self.high is not None and v > self.high:
                raise ConfigError(key, f"must be <= {self.high}, got {v}")
        return value


@dataclass
class BuildContext:
    """Everything a trainer builder needs.

    ``model_path`` is the saved start checkpoint (the SFT model) that ``model`` was loaded from; trainers
    that build copies (reference or reward models) load them from there. ``log_callbacks(prefix)`` gives
    the callbacks that mirror an extra training phase (the reward model) to the run's MLflow run under
    ``<prefix><name>`` (none when the run is not tracked). ``adapter`` is ``po.peft`` (None = full
    fine-tuning): every builder hands ``valuedrift.adapters.lora_config(adapter)`` to its trainer;
    ``quantization`` is the ``BitsAndBytesConfig`` ``model`` was loaded with (QLoRA), for copies such as
    the reward model.
    """

    model: Any
    tokenizer: Any
    dataset: Any
    train_kwargs: dict[str, Any]
    hparams: dict[str, Any]
    max_length: int
    callbacks: list[Any]
    run_dir: Path | None = None
    model_path: Path | None = None
    log_callbacks: Callable[[str], list[Any]] = lambda prefix: []
    adapter: AdapterConfig | None = None
    quantization: Any = None


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
    # cross-checks between resolved hparams and the po training config: (hparams, po config, key) -> None
    check: Callable[[dict[str, Any], Any, str], None] | None = None
    # training examples (what po.batch_size counts) per preference pair, from the resolved hparams; None =
    # the data kind's count (:meth:`examples`)
    examples_per_pair: Callable[[dict[str, Any]], int] | None = None

    def examples(self, n_pairs: int, hparams: dict[str, Any]) -> int:
        """Training examples in one epoch over ``n_pairs`` preference pairs (what ``po.num_train_epochs``
        counts, ``TrainConfig.total_steps``): one per pair for paired data, two for unpaired (the chosen and
        the rejected row), or ``examples_per_pair(hparams)`` per pair (reward-model RL: one sampled
        completion each, ``num_generations`` per prompt)."""
        if self.examples_per_pair is not None:
            return n_pairs * self.examples_per_pair(hparams)
        return n_pairs * (2 if self.data is DataKind.UNPAIRED else 1)

    def resolve_hparams(self, given: dict[str, Any] | None, key: str) -> dict[str, Any]:
        """Defaults overlaid with ``given``; an unknown name or bad value raises ConfigError at ``key``."""
        out = {k: h.default for k, h in self.hparams.items()}
        for k, v in (given or {}).items():
            if k not in self.hparams:
                raise ConfigError(f"{key}.{k}", f"unknown hyperparameter for {self.name}; allowed: {', '.join(self.hparams)}")
            out[k] = self.hparams[k].check(f"{key}.{k}", v)
        return out

    def needs(self) -> dict[str, Any]:
        """The declared needs, as plain data (for logs, MLflow tags and docs)."""
        return {
            "reference_model": self.needs_reference_model,
            "data": self.data.value,
            "reward_model": self.needs_reward_model,
            "experimental": self.experimental,
        }
