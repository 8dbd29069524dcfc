"""Sections ``sft`` and ``po``: training hyperparameters (TRL / transformers TrainingArguments names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from valuedrift.core.errors import check


@dataclass
class TrainConfig:
    """Hyperparameters shared by the training stages (TRL / transformers TrainingArguments names)."""

    max_steps: int = 30
    learning_rate: float = 5e-5
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    eval_every: int = 10
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False  # trades compute for memory: on for big models on GPUs

    def validate(self, key: str) -> None:
        check(self.max_steps >= 1, f"{key}.max_steps", f"must be >= 1, got {self.max_steps}")
        check(0 < self.learning_rate < 1, f"{key}.learning_rate", f"must lie in (0, 1), got {self.learning_rate}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"{key}.grad_accum", f"must be >= 1, got {self.grad_accum}")
        check(self.max_length >= 16, f"{key}.max_length", f"must be >= 16, got {self.max_length}")
        check(self.eval_every >= 1, f"{key}.eval_every", f"must be >= 1 (steps between evaluations), got {self.eval_every}")
        check(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", "must lie in [0, 1)")
        allowed = ("constant", "linear", "cosine", "constant_with_warmup")
        check(self.lr_scheduler in allowed, f"{key}.lr_scheduler", f"{self.lr_scheduler!r} is not one of {', '.join(allowed)}")
        check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")


@dataclass
class SFTConfig(TrainConfig):
    """The ``sft`` stage: which corpora to train on (one run each; a DVC matrix), and the hyperparameters."""

    corpora: list[str] = field(default_factory=lambda: ["neutral_heavy"])

    def validate(self, key: str) -> None:
        super().validate(key)
        check(bool(self.corpora), f"{key}.corpora", "must list at least one corpus")
        for i, c in enumerate(self.corpora):
            check(c not in self.corpora[:i], f"{key}.corpora[{i}]", f"corpus {c!r} is listed twice")


@dataclass
class POConfig(TrainConfig):
    """The ``po`` stage: algorithms × preference sets, all from the same SFT checkpoint.

    ``hparams.<algorithm>`` holds that algorithm's own hyperparameters (e.g. ``dpo: {beta: 0.1,
    loss_type: [sigmoid]}``); names and ranges are declared in ``valuedrift.train.algorithms``.
    ``start_from`` names the SFT run (an entry of ``sft.corpora``) whose final checkpoint every preference
    run starts from, and whose measured profile resolves ``reinforce``/``reverse`` targets.
    """

    start_from: str = "neutral_heavy"
    algorithms: list[str] = field(default_factory=lambda: ["dpo"])
    preference_sets: list[str] = field(default_factory=lambda: ["value_gap"])
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_steps: int = 20
    learning_rate: float = 5e-6
    eval_every: int = 5

    def validate(self, key: str) -> None:
        super().validate(key)
        check(bool(self.algorithms), f"{key}.algorithms", "must list at least one algorithm")
        for i, a in enumerate(self.algorithms):  # names and hparams against the registry: config.load
            check(a not in self.algorithms[:i], f"{key}.algorithms[{i}]", f"algorithm {a!r} is listed twice")
        for a, given in self.hparams.items():
            check(isinstance(given, dict), f"{key}.hparams.{a}", "expected a mapping of hyperparameters")
        check(bool(self.preference_sets), f"{key}.preference_sets", "must list at least one preference set")
