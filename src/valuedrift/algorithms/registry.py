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

from collections.abc import Callable
from typing import Any

from valuedrift.algorithms.base import Algorithm, BuildContext, DataKind, HParam
from valuedrift.algorithms.reward_rl import POLICY_TRAINERS, build_reward_rl
from valuedrift.algorithms.trainers import build_dpo, build_kto, build_orpo, build_simpo
from valuedrift.core.errors import check


def _check_kto(hp: dict[str, Any], cfg: Any, key: str) -> None:
    # KTO's KL estimate z_ref pairs each completion with another prompt of the same batch
    check(cfg.batch_size >= 2, "po.batch_size", f"kto needs batch_size >= 2 (its KL estimate mixes examples), got {cfg.batch_size}")


def _build_rm_rl(policy_trainer: str) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext) -> Any:
        return build_reward_rl(ctx, policy_trainer)

    return build


def _check_rm_rl(hp: dict[str, Any], cfg: Any, key: str) -> None:
    k = hp["num_generations"]
    check(
        (cfg.batch_size * cfg.grad_accum) % k == 0,
        f"{key}.num_generations",
        f"po.batch_size × po.grad_accum = {cfg.batch_size * cfg.grad_accum} completions per step must be a "
        f"multiple of num_generations = {k}",
    )
    check(hp["max_completion_length"] < cfg.max_length, f"{key}.max_completion_length", f"must be < po.max_length ({cfg.max_length})")


DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_pair",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
)

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
        examples_per_pair=lambda hp: hp["num_generations"],  # batch_size counts completions
    )


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm(
        name="dpo",
        description="Direct Preference Optimisation (TRL DPOTrainer); any list of DPOConfig.loss_type",
        needs_reference_model=True,
        data=DataKind.PAIRED,
        needs_reward_model=False,
        build=build_dpo,
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
        build=build_simpo,
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
        build=build_orpo,
        hparams={"beta": HParam(0.1, low=0.0, doc="λ: weight of the odds-ratio term")},
        experimental=True,
    ),
    "kto": Algorithm(
        name="kto",
        description="KTO: prospect-theoretic loss on unpaired desirable/undesirable completions (TRL KTOTrainer)",
        needs_reference_model=True,
        data=DataKind.UNPAIRED,
        needs_reward_model=False,
        build=build_kto,
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


def algorithm_hparams(hparams: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """Algorithm ``name``'s hyperparameters: the registry's defaults overlaid with ``hparams[name]``
    (``po.hparams``); a bad name or value raises ConfigError at ``po.hparams.<name>.<hparam>``."""
    return get_algorithm(name).resolve_hparams(hparams.get(name), f"po.hparams.{name}")
