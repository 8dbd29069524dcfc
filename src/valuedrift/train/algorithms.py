"""Registry of preference-optimisation algorithms: one entry per algorithm, each declaring its needs.

An :class:`Algorithm` says whether it needs a frozen reference model, paired (prompt, chosen, rejected)
or unpaired (prompt, completion, label) data, and a learned reward model; which hyperparameters it
accepts (with defaults and ranges, checked before any model loads); and how to build its TRL trainer.

Losses (σ = logistic, y_w/y_l = chosen/rejected, π_ref = the SFT checkpoint):

- ``dpo``: −log σ(β[log π(y_w|x)/π_ref(y_w|x) − log π(y_l|x)/π_ref(y_l|x)]) for ``sigmoid``; any list
  of ``DPOConfig.loss_type`` (ipo, robust, hinge, …), summed (TRL weights each 1 unless told).
- ``simpo``: −log σ(β/|y_w|·log π(y_w|x) − β/|y_l|·log π(y_l|x) − γ); no reference model
  (TRL's CPOTrainer with ``loss_type="simpo"``, ``cpo_alpha=0``).
- ``orpo``: −log π(y_w|x)/|y_w| − λ·log σ(log odds(y_w|x) − log odds(y_l|x)), odds(y) = p/(1−p) of the
  length-normalised likelihood; no reference model (``beta`` = λ).
- ``kto``: unpaired; desirable y: w_d·(1 − σ(β(r(y) − z_ref))), undesirable: w_u·(1 − σ(β(z_ref − r(y)))),
  r = log π/π_ref, z_ref = batch KL estimate. Pairs are split into (chosen, True), (rejected, False).
- ``rm_rloo`` / ``rm_grpo``: reward-model RL in the paper's PPO role (TRL 1.16 has no PPO); see
  :mod:`valuedrift.train.reward_rl`. A reward model is trained on the same pairs, then the policy is
  optimised on-policy with RLOO or GRPO against it, anchored by ``kl_coef``·KL(π ‖ π_ref).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


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
        from valuedrift.config import ConfigError

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
    that build copies (reference or reward models) load them from there. ``tracker`` mirrors extra
    training phases (the reward model) to the run's MLflow run.
    """

    model: Any
    tokenizer: Any
    dataset: Any
    train_kwargs: dict[str, Any]
    hparams: dict[str, Any]
    max_length: int
    callbacks: list[Any]
    run_dir: Path | None = None
    params: Any = None
    model_path: Path | None = None
    tracker: Any = None


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

    def resolve_hparams(self, given: dict[str, Any] | None, key: str) -> dict[str, Any]:
        """Defaults overlaid with ``given``; an unknown name or bad value raises ConfigError at ``key``."""
        from valuedrift.config import ConfigError

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


def _common_args(ctx: BuildContext) -> dict[str, Any]:
    return {**ctx.train_kwargs, "max_length": ctx.max_length}


def _build_dpo(ctx: BuildContext) -> Any:
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**_common_args(ctx), **ctx.hparams)
    return DPOTrainer(
        model=ctx.model, args=args, train_dataset=ctx.dataset, processing_class=ctx.tokenizer, callbacks=ctx.callbacks
    )


def _experimental(module: str) -> Any:
    """Import a ``trl.experimental`` module without its TRLExperimentalWarning (the registry flags it)."""
    import importlib

    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        return importlib.import_module(module)


def _build_simpo(ctx: BuildContext) -> Any:
    cpo = _experimental("trl.experimental.cpo")
    hp = ctx.hparams
    args = cpo.CPOConfig(
        **_common_args(ctx), loss_type="simpo", cpo_alpha=0.0, beta=hp["beta"], simpo_gamma=hp["gamma"]
    )
    return cpo.CPOTrainer(
        model=ctx.model, args=args, train_dataset=ctx.dataset, processing_class=ctx.tokenizer, callbacks=ctx.callbacks
    )


def _build_orpo(ctx: BuildContext) -> Any:
    orpo = _experimental("trl.experimental.orpo")
    args = orpo.ORPOConfig(**_common_args(ctx), beta=ctx.hparams["beta"])
    return orpo.ORPOTrainer(
        model=ctx.model, args=args, train_dataset=ctx.dataset, processing_class=ctx.tokenizer, callbacks=ctx.callbacks
    )


def _build_kto(ctx: BuildContext) -> Any:
    from trl import KTOConfig, KTOTrainer

    args = KTOConfig(**_common_args(ctx), **ctx.hparams)
    return KTOTrainer(
        model=ctx.model, args=args, train_dataset=ctx.dataset, processing_class=ctx.tokenizer, callbacks=ctx.callbacks
    )


def _check_kto(hp: dict[str, Any], cfg: Any, key: str) -> None:
    from valuedrift.config import _check

    # KTO's KL estimate z_ref pairs each completion with another prompt of the same batch
    _check(cfg.batch_size >= 2, "po.batch_size", f"kto needs batch_size >= 2 (its KL estimate mixes examples), got {cfg.batch_size}")


def _build_rm_rl(policy_trainer: str) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext) -> Any:
        from valuedrift.train.reward_rl import build_reward_rl

        return build_reward_rl(ctx, policy_trainer)

    return build


def _check_rm_rl(hp: dict[str, Any], cfg: Any, key: str) -> None:
    from valuedrift.config import _check

    k = hp["num_generations"]
    _check(
        (cfg.batch_size * cfg.grad_accum) % k == 0,
        f"{key}.num_generations",
        f"po.batch_size × po.grad_accum = {cfg.batch_size * cfg.grad_accum} completions per step must be a "
        f"multiple of num_generations = {k}",
    )
    _check(hp["max_completion_length"] < cfg.max_length, f"{key}.max_completion_length", f"must be < po.max_length ({cfg.max_length})")


DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_pair",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
)

POLICY_TRAINERS = ("rloo", "grpo")  # on-policy RL after the reward model: algorithms rm_rloo, rm_grpo

RM_RL_HPARAMS = {
    "kl_coef": HParam(0.05, low=0.0, low_inclusive=True, doc="β: KL(π ‖ π_ref) coefficient; 0 = no reference model"),
    "num_generations": HParam(4, low=1, doc="completions sampled per prompt (group size, >= 2)"),
    "max_completion_length": HParam(48, low=0, doc="tokens per sampled completion"),
    "temperature": HParam(1.0, low=0.0, doc="sampling temperature for the completions"),
    "reward_steps": HParam(16, low=0, doc="RewardTrainer steps on the preference pairs before RL"),
    "reward_learning_rate": HParam(1.0e-5, low=0.0, high=1.0, doc="RewardTrainer learning rate"),
}

def _rm_rl_algorithm(policy_trainer: str) -> Algorithm:
    """``rm_<policy_trainer>``: a reward model on the pairs, then on-policy RL against it (rloo | grpo)."""
    return Algorithm(
        name=f"rm_{policy_trainer}",
        description=f"reward model (TRL RewardTrainer) on the pairs, then on-policy {policy_trainer.upper()} against it "
        "with a KL anchor (the paper's PPO role; not PPO)",
        needs_reference_model=True,
        data=DataKind.PAIRED,
        needs_reward_model=True,
        build=_build_rm_rl(policy_trainer),
        hparams=RM_RL_HPARAMS,
        check=_check_rm_rl,
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
    "simpo": Algorithm(
        name="simpo",
        description="SimPO: reference-free, length-normalised margin loss (TRL experimental CPOTrainer, loss simpo, cpo_alpha 0)",
        needs_reference_model=False,
        data=DataKind.PAIRED,
        needs_reward_model=False,
        build=_build_simpo,
        hparams={
            "beta": HParam(2.0, low=0.0, doc="β: reward scale of the length-normalised log-likelihood"),
            "gamma": HParam(0.5, low=0.0, low_inclusive=True, doc="γ: target reward margin (CPOConfig.simpo_gamma)"),
        },
        experimental=True,
    ),
    "orpo": Algorithm(
        name="orpo",
        description="ORPO: SFT loss plus an odds-ratio preference term, no reference model (TRL experimental ORPOTrainer)",
        needs_reference_model=False,
        data=DataKind.PAIRED,
        needs_reward_model=False,
        build=_build_orpo,
        hparams={"beta": HParam(0.1, low=0.0, doc="λ: weight of the odds-ratio term")},
        experimental=True,
    ),
    "kto": Algorithm(
        name="kto",
        description="KTO: prospect-theoretic loss on unpaired desirable/undesirable completions (TRL KTOTrainer)",
        needs_reference_model=True,
        data=DataKind.UNPAIRED,
        needs_reward_model=False,
        build=_build_kto,
        hparams={
            "beta": HParam(0.1, low=0.0, doc="β: KL strength"),
            "desirable_weight": HParam(1.0, low=0.0, doc="w_d: weight of desirable (chosen) examples"),
            "undesirable_weight": HParam(1.0, low=0.0, doc="w_u: weight of undesirable (rejected) examples"),
            "loss_type": HParam("kto", choices=("kto", "apo_zero_unpaired"), doc="KTOConfig.loss_type"),
        },
        check=_check_kto,
    ),
    **{f"rm_{trainer}": _rm_rl_algorithm(trainer) for trainer in POLICY_TRAINERS},
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise KeyError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
