"""Sections ``sft`` and ``po``: training hyperparameters (TRL / transformers TrainingArguments names).

Training length and checkpoint cadence, in optimizer steps (what the trajectory's step axis counts):

- ``max_steps: N`` (the default) trains N steps; ``num_train_epochs: E`` (with ``max_steps: null``) trains

      total_steps = ceil(E · steps_per_epoch),
      steps_per_epoch = max(1, ceil(ceil(n_examples / (batch_size · world_size)) / grad_accum)),

  transformers' own count for a dataset of ``n_examples`` training examples (:func:`optimizer_steps`; what an
  example is depends on the trainer: an SFT row, a preference pair, an unpaired KTO row, a sampled RL
  completion — see ``valuedrift.algorithms.base.Algorithm.examples``);
- ``eval_every: K`` (an integer) scores stances and saves a checkpoint every K steps; ``eval_every: f`` (a
  fraction in (0, 1], written with a decimal point) every ceil(f · total_steps) steps
  (:meth:`TrainConfig.eval_interval`). Step 0 and the last step are always scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from valuedrift.core.errors import check


def optimizer_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float, world_size: int = 1) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_examples`` (the module docstring's formula)::

        batches_per_epoch = ceil(n_examples / (batch_size · world_size))     # per process
        steps_per_epoch   = max(1, ceil(batches_per_epoch / grad_accum))
        total_steps       = ceil(epochs · steps_per_epoch)

    The same count as ``transformers.Trainer`` for ``num_train_epochs`` (a partial accumulation window at an
    epoch's end is a step), so passing it on as ``max_steps`` trains exactly the epochs asked for.
    """
    if n_examples < 1 or batch_size < 1 or grad_accum < 1 or world_size < 1 or epochs <= 0:
        raise ValueError(
            f"optimizer_steps needs positive sizes and epochs, got n_examples={n_examples}, batch_size={batch_size}, "
            f"grad_accum={grad_accum}, world_size={world_size}, epochs={epochs}"
        )
    batches = math.ceil(n_examples / (batch_size * world_size))
    per_epoch = max(1, math.ceil(batches / grad_accum))
    return math.ceil(epochs * per_epoch)


@dataclass
class AdapterConfig:
    """LoRA adapters (``peft``) instead of full fine-tuning: ``sft.peft`` / ``po.peft`` (null = full fine-tuning).

    A LoRA layer replaces a weight W (d_out × d_in) by W + (alpha / r) · B · A, with A (r × d_in) and
    B (d_out × r) trained and W frozen; B starts at zero, so step 0 is the start model exactly.

    - ``r``: rank of A and B; ``alpha``: scale numerator (the update is scaled by alpha / r);
    - ``dropout``: dropout on the adapter's input (0 = none);
    - ``target_modules``: module names to adapt (``[q_proj, v_proj]``), or ``all-linear`` (every linear layer
      but the output head);
    - ``quantize``: null, ``4bit`` or ``8bit``: QLoRA, the frozen base weights loaded quantized with
      bitsandbytes (NF4 with double quantisation for 4bit; compute in ``model.dtype``). Needs a CUDA device
      and ``pip install bitsandbytes`` (the ``qlora`` extra).

    Saved runs stay plain models: ``final/`` holds the adapter merged into the base weights
    (W + (alpha / r)·B·A, loadable with ``AutoModelForCausalLM``), and ``adapter/`` the adapter alone.
    The stance tracer scores the adapted model in memory at every checkpoint. Reference models (DPO, KTO,
    the KL anchor of reward-model RL) are the start model itself: TRL computes them with the adapter
    disabled, so no second copy of the weights is loaded.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    quantize: Literal["4bit", "8bit"] | None = None

    def validate(self, key: str) -> None:
        check(self.r >= 1, f"{key}.r", f"must be >= 1, got {self.r}")
        check(self.alpha > 0, f"{key}.alpha", f"must be > 0, got {self.alpha}")
        check(0 <= self.dropout < 1, f"{key}.dropout", f"must lie in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, str):
            check(self.target_modules == "all-linear", f"{key}.target_modules",
                  f"a string must be 'all-linear'; list module names as a list, got {self.target_modules!r}")
        else:
            check(bool(self.target_modules), f"{key}.target_modules", "must list at least one module name (or be 'all-linear')")
            for i, m in enumerate(self.target_modules):
                check(bool(m.strip()), f"{key}.target_modules[{i}]", "must not be empty")


@dataclass
class TrainConfig:
    """Hyperparameters shared by the training stages (TRL / transformers TrainingArguments names).

    ``max_steps`` or ``num_train_epochs``: exactly one is set (the other null); ``max_steps`` is the default.
    ``eval_every``: an integer number of steps, or a fraction of training in (0, 1] (module docstring).
    ``peft``: LoRA / QLoRA adapters (:class:`AdapterConfig`); null = full fine-tuning.
    bf16 / fp16 training follows ``model.dtype`` (``valuedrift.train.scaffold.training_kwargs``), unless
    ``mixed_precision: bf16`` with ``model.dtype: float32``: the weights, gradients, optimizer state and saved
    checkpoints stay float32 and the training forward and backward run in bfloat16 autocast (``bf16=True``;
    matmuls with 8-bit mantissas, accumulated in float32). The stance tracer scores the live model with the
    autocast off (:func:`valuedrift.train.tracing.full_precision`), so every checkpoint is measured exactly as a
    float32 reload of it. Faster where the hardware has bf16 matrix instructions (AVX512-BF16, AMX, GPUs):
    ``benchmarks/bench_training_throughput.py``. With ``model.dtype: bfloat16`` it changes nothing (the weights
    train in bf16 already); with ``float16`` it is an error.
    """

    max_steps: int | None = 30
    num_train_epochs: float | None = None
    learning_rate: float = 5e-5
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    eval_every: int | float = 10
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False  # trades compute for memory: on for big models on GPUs
    mixed_precision: Literal["bf16"] | None = None  # null = model.dtype's precision; bf16 = bf16 autocast of float32 weights
    peft: AdapterConfig | None = None

    def validate(self, key: str) -> None:
        self._validate_length(key)
        check(0 < self.learning_rate < 1, f"{key}.learning_rate", f"must lie in (0, 1), got {self.learning_rate}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"{key}.grad_accum", f"must be >= 1, got {self.grad_accum}")
        check(self.max_length >= 16, f"{key}.max_length", f"must be >= 16, got {self.max_length}")
        if isinstance(self.eval_every, float):
            check(0 < self.eval_every <= 1, f"{key}.eval_every",
                  f"a fraction of training must lie in (0, 1] (an integer counts steps), got {self.eval_every}")
        else:
            check(self.eval_every >= 1, f"{key}.eval_every", f"must be >= 1 (steps between evaluations), got {self.eval_every}")
        check(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", "must lie in [0, 1)")
        allowed = ("constant", "linear", "cosine", "constant_with_warmup")
        check(self.lr_scheduler in allowed, f"{key}.lr_scheduler", f"{self.lr_scheduler!r} is not one of {', '.join(allowed)}")
        check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")

    def _validate_length(self, key: str) -> None:
        check(
            self.max_steps is None or self.num_train_epochs is None,
            f"{key}.num_train_epochs",
            f"set only one of max_steps ({self.max_steps}) and num_train_epochs ({self.num_train_epochs}): "
            "max_steps: null to train by epochs",
        )
        check(self.max_steps is not None or self.num_train_epochs is not None, f"{key}.max_steps",
              "set max_steps or num_train_epochs (both are null)")
        if self.max_steps is not None:
            check(self.max_steps >= 1, f"{key}.max_steps", f"must be >= 1, got {self.max_steps}")
        if self.num_train_epochs is not None:
            check(self.num_train_epochs > 0, f"{key}.num_train_epochs", f"must be > 0, got {self.num_train_epochs}")

    def total_steps(self, n_examples: int, world_size: int = 1) -> int:
        """Optimizer steps of the run: ``max_steps``, or :func:`optimizer_steps` of ``num_train_epochs`` over
        ``n_examples`` training examples."""
        if self.max_steps is not None:
            return self.max_steps
        assert self.num_train_epochs is not None  # validate: exactly one is set
        return optimizer_steps(n_examples, self.batch_size, self.grad_accum, self.num_train_epochs, world_size)

    def eval_interval(self, total_steps: int) -> int:
        """Steps between stance evaluations (and checkpoints): ``eval_every`` steps, or for a fraction f,
        max(1, ceil(f · total_steps))."""
        if isinstance(self.eval_every, float):
            return max(1, math.ceil(self.eval_every * total_steps))
        return self.eval_every


@dataclass
class SFTConfig(TrainConfig):
    """The ``sft`` stage: which corpora to train on (one run each; a DVC matrix), and the hyperparameters.

    ``padding_free``: each batch is one flat sequence of its rows with per-row position ids (TRL's
    ``SFTConfig(padding_free=True)``; transformers turns the positions into a block-diagonal causal mask, so no
    row attends to another and no FLOP is spent on padding). TRL does not truncate rows then, so every row must
    fit ``max_length`` (checked: the error names the longest row); with padding the rows are cut at ``max_length``.
    """

    corpora: list[str] = field(default_factory=lambda: ["neutral_heavy"])
    padding_free: bool = False

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
    max_steps: int | None = 20
    learning_rate: float = 5e-6
    eval_every: int | float = 5

    def validate(self, key: str) -> None:
        super().validate(key)
        check(bool(self.algorithms), f"{key}.algorithms", "must list at least one algorithm")
        for i, a in enumerate(self.algorithms):  # names and hparams against the registry: config.load
            check(a not in self.algorithms[:i], f"{key}.algorithms[{i}]", f"algorithm {a!r} is listed twice")
        for a, given in self.hparams.items():
            check(isinstance(given, dict), f"{key}.hparams.{a}", "expected a mapping of hyperparameters")
        check(bool(self.preference_sets), f"{key}.preference_sets", "must list at least one preference set")
