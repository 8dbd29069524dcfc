"""Reward-model RL: the paper's PPO role, built from what TRL 1.16 has (it has no PPO).

Phase 1 — reward model. TRL's ``RewardTrainer`` fits a scalar head r_φ on the SFT checkpoint to the same
preference pairs the other algorithms see (Bradley–Terry):

    L(φ) = −E log σ(r_φ(x, y_w) − r_φ(x, y_l)).

It is saved to ``<run>/reward/reward_model`` (resume checkpoints in ``<run>/reward/checkpoints`` while it
trains, deleted once it is saved: 1.6 GB of optimizer state each that DVC would otherwise hash and cache; an
interrupted phase resumes, a finished one is reused) and its logs go to MLflow as ``reward_model/<name>``.

Phase 2 — on-policy RL from the SFT policy π_θ, with π_ref = the SFT checkpoint. For each prompt x,
k = ``num_generations`` completions y_1..y_k ~ π_θ(·|x) are scored by r_φ and the policy maximises

    E[r_φ(x, y)] − β·KL(π_θ ‖ π_ref),   β = ``kl_coef``,

with advantages A_i = r_i − mean_{j≠i} r_j (``rm_rloo``, TRL ``RLOOTrainer``) or
A_i = (r_i − mean_j r_j) / std_j r_j (``rm_grpo``, TRL ``GRPOTrainer``). The KL anchor is what makes this
the PPO-role algorithm; it is not PPO (no value head, no clipped GAE), and logs and docs say so.

With ``po.peft`` both phases train LoRA adapters (TRL 1.16's RewardTrainer, RLOOTrainer and GRPOTrainer
all take ``peft_config``): the reward model's adapter (with its new score head) is merged before it is
saved, so phase 2 loads a plain model; π_ref is the policy with its adapter disabled. With QLoRA the reward
model loads quantized like the policy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from valuedrift.adapters import SEQ_CLS, lora_config, quantized_load_kwargs, save_trained
from valuedrift.algorithms.base import BuildContext
from valuedrift.core.processes import is_main_process, wait_for_everyone
from valuedrift.core.rundir import RunDir

log = logging.getLogger(__name__)

POLICY_TRAINERS = ("rloo", "grpo")  # on-policy RL after the reward model: algorithms rm_rloo, rm_grpo
REWARD_DIR = "reward"  # <run>/reward/ is a run folder of its own: checkpoints/ while training
REWARD_MODEL = "reward_model"  # also the reward function's name in the RL logs: rewards/reward_model/mean


def reward_model_path(run_dir: Path) -> Path:
    return Path(run_dir) / REWARD_DIR / REWARD_MODEL


def truncated_pairs(dataset: Any, tokenizer: Any, max_length: int) -> Any:
    """Tokenize prompt+chosen / prompt+rejected with the chat template and keep the first ``max_length`` tokens.

    TRL's RewardTrainer would *drop* every pair longer than ``max_length``; the other algorithms truncate,
    and so do we here (``chosen_ids`` / ``rejected_ids`` are what RewardTrainer takes as processed data).
    """

    def encode(example: dict[str, Any]) -> dict[str, list[int]]:
        return {
            f"{side}_ids": tokenizer.apply_chat_template(example["prompt"] + example[side], tokenize=True, return_dict=True)[
                "input_ids"
            ][:max_length]
            for side in ("chosen", "rejected")
        }

    return dataset.map(encode, remove_columns=dataset.column_names, desc="Tokenizing pairs for the reward model")


def train_reward_model(ctx: BuildContext, callbacks: list[Any] | None = None) -> Path:
    """Phase 1: fit r_φ on ``ctx.dataset`` (prompt/chosen/rejected) from ``ctx.model_path``; returns its folder.

    ``callbacks``: extra ``TrainerCallback`` objects for the reward trainer (the policy's are in ``ctx``).
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    if ctx.run_dir is None or ctx.model_path is None:
        raise ValueError("reward-model RL needs BuildContext.run_dir and model_path (the saved SFT checkpoint)")
    out = reward_model_path(ctx.run_dir)
    if (out / "config.json").exists():
        log.info("reward model already trained: %s", out)
        return out
    hp = ctx.hparams
    phase_dir = RunDir(Path(ctx.run_dir) / REWARD_DIR)
    kwargs = {
        **ctx.train_kwargs,
        "output_dir": str(phase_dir.checkpoints),
        "max_steps": hp["reward_steps"],
        "learning_rate": hp["reward_learning_rate"],
        "save_steps": max(1, hp["reward_steps"] // 2),
    }
    model_path = ctx.model_path

    def load_reward(**load: Any) -> Any:
        reward = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=ctx.model.dtype, **load)
        reward.config.pad_token_id = ctx.tokenizer.pad_token_id
        return reward

    trainer = RewardTrainer(
        model=load_reward(**quantized_load_kwargs(ctx.quantization, ctx.model.device)),
        args=RewardConfig(**kwargs, max_length=ctx.max_length),
        train_dataset=truncated_pairs(ctx.dataset, ctx.tokenizer, ctx.max_length),
        processing_class=ctx.tokenizer,
        callbacks=[*ctx.log_callbacks(f"{REWARD_MODEL}/"), *(callbacks or [])],
        peft_config=lora_config(ctx.adapter, SEQ_CLS),
    )
    resume = phase_dir.last_checkpoint()
    if resume:
        log.info("resuming the reward model from %s", resume)
    log.info("phase 1/2: training the reward model for %d steps (RewardTrainer)", hp["reward_steps"])
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    save_trained(trainer, out, phase_dir.adapter, load_reward)
    if is_main_process():
        ctx.tokenizer.save_pretrained(str(out))
        phase_dir.drop_checkpoints()
    wait_for_everyone(ctx.train_kwargs.get("use_cpu", True))
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def build_policy_trainer(ctx: BuildContext, reward_path: Path, policy_trainer: str) -> Any:
    """Phase 2: an RLOO or GRPO trainer on the prompts of ``ctx.dataset`` with r_φ as the reward."""
    from transformers import AutoTokenizer

    if policy_trainer not in POLICY_TRAINERS:
        raise ValueError(f"policy_trainer must be one of {POLICY_TRAINERS}, got {policy_trainer!r}")
    if policy_trainer == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    hp = ctx.hparams
    args = Config(
        **ctx.train_kwargs,
        beta=hp["kl_coef"],
        num_generations=hp["num_generations"],
        max_completion_length=hp["max_completion_length"],
        temperature=hp["temperature"],
    )
    prompts = ctx.dataset.select_columns(["prompt"])
    log.info(
        "phase 2/2: %s against the reward model, %d completions per prompt, KL coefficient %g",
        policy_trainer.upper(), hp["num_generations"], hp["kl_coef"],
    )
    return Trainer(
        model=ctx.model,
        reward_funcs=str(reward_path),
        args=args,
        train_dataset=prompts,
        processing_class=ctx.tokenizer,
        reward_processing_classes=AutoTokenizer.from_pretrained(reward_path),
        callbacks=ctx.callbacks,
        peft_config=lora_config(ctx.adapter),
    )


def build_reward_rl(ctx: BuildContext, policy_trainer: str) -> Any:
    """Both phases: train (or reuse) the reward model, then return the policy trainer."""
    return build_policy_trainer(ctx, train_reward_model(ctx), policy_trainer)
