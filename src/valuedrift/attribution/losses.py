"""Per-example training losses, tokenised the way TRL 1.16 trains them.

Tokenisation (TRL's ``SFTTrainer`` and ``DPOTrainer`` for conversational prompt/completion rows): the
prompt is rendered with the chat template and a generation prompt, the prompt + completion conversation
without; the completion starts where the two token sequences diverge (``trl.data_utils.common_prefix_length``;
for a pair, the shorter of the two prefixes), and prompt + completion is cut to ``max_length`` tokens from
the start (``truncation_mode="keep_start"``).

Losses of one example z (π_θ(y | x) = Π_i π_θ(y_i | x, y_<i) over the completion tokens y):

- **sft** (completion-only NLL, TRL's ``loss_type="nll"``): L(z; θ) = −(1/|y|) Σ_i log π_θ(y_i | x, y_<i).
  TRL averages over the tokens of a whole batch; the per-example mean is the usual TracIn stand-in.
- **dpo** (``loss_type: [sigmoid]``): L(z; θ) = −log σ(β [(log π_θ(y_w|x) − log π_ref(y_w|x)) −
  (log π_θ(y_l|x) − log π_ref(y_l|x))]), π_ref = the run's start model (the SFT checkpoint), whose
  log-probs are computed once (:meth:`DPOLoss.reference`).

Other algorithms raise a ConfigError naming the algorithm ("not supported yet").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from valuedrift.attribution.sequences import SharedPrefix, request_logprobs
from valuedrift.core.errors import ConfigError
from valuedrift.stance.request_scoring import Request

SUPPORTED: tuple[str, ...] = ("sft", "dpo")


def _ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def _prefix(a: Sequence[int], b: Sequence[int]) -> int:
    from trl.data_utils import common_prefix_length

    return int(common_prefix_length(list(a), list(b)))


def completion_requests(
    tokenizer: Any, prompt: list[dict[str, str]], completions: Sequence[list[dict[str, str]]], max_length: int
) -> list[Request | None]:
    """(prompt ids, completion ids) of each completion after ``prompt``, as TRL tokenises and truncates them;
    None where truncation leaves no completion token (the example carries no loss)."""
    prompt_ids = _ids(tokenizer, prompt, True)
    full = [_ids(tokenizer, prompt + c, False) for c in completions]
    n_prompt = min(_prefix(prompt_ids, f) for f in full)
    out: list[Request | None] = []
    for f in full:
        cut = f[:max_length]
        out.append(Request(tuple(cut[:n_prompt]), tuple(cut[n_prompt:])) if len(cut) > n_prompt and n_prompt > 0 else None)
    return out


class ExampleLoss(Protocol):
    """L(z; θ) of training example ``i`` (a scalar tensor with gradients), or None if it has no loss;
    :meth:`prepare` once per checkpoint (the shared-prefix cache, :mod:`valuedrift.attribution.sequences`)."""

    prefix: SharedPrefix | None

    def prepare(self, model: Any) -> None: ...

    def __call__(self, model: Any, i: int) -> torch.Tensor | None: ...


@dataclass
class SFTLoss:
    """Completion-token NLL of SFT rows (prompt / completion message lists)."""

    tokenizer: Any
    rows: Sequence[dict[str, Any]]
    max_length: int

    def __post_init__(self) -> None:
        self.requests = [completion_requests(self.tokenizer, r["prompt"], [r["completion"]], self.max_length)[0] for r in self.rows]
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.prefix: SharedPrefix | None = None

    def prepare(self, model: Any) -> None:
        self.prefix = SharedPrefix.build(model, self.requests, self.pad)

    def __call__(self, model: Any, i: int) -> torch.Tensor | None:
        req = self.requests[i]
        if req is None:
            return None
        sums, lengths = request_logprobs(model, [req], self.pad, self.prefix)
        return -(sums[0] / lengths[0])


@dataclass
class DPOLoss:
    """The sigmoid DPO loss of preference pairs (prompt / chosen / rejected), reference = the start model."""

    tokenizer: Any
    rows: Sequence[dict[str, Any]]
    max_length: int
    beta: float
    ref: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.requests = [completion_requests(self.tokenizer, r["prompt"], [r["chosen"], r["rejected"]], self.max_length) for r in self.rows]
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.prefix: SharedPrefix | None = None

    def prepare(self, model: Any) -> None:
        self.prefix = SharedPrefix.build(model, [r for pair in self.requests for r in pair], self.pad)

    def _logps(self, model: Any, i: int) -> torch.Tensor | None:
        chosen, rejected = self.requests[i]
        if chosen is None or rejected is None:
            return None
        return request_logprobs(model, [chosen, rejected], self.pad, self.prefix)[0]

    @torch.no_grad()
    def reference(self, model: Any) -> None:
        """log π_ref(y_w|x), log π_ref(y_l|x) of every pair on ``model`` (the start model)."""
        self.ref = [None if (lp := self._logps(model, i)) is None else lp.detach() for i in range(len(self.rows))]

    def __call__(self, model: Any, i: int) -> torch.Tensor | None:
        if not self.ref:
            raise RuntimeError("DPOLoss.reference(start model) must run first")
        lp, ref = self._logps(model, i), self.ref[i]
        if lp is None or ref is None:
            return None
        margin = (lp[0] - ref[0]) - (lp[1] - ref[1])
        return -F.logsigmoid(self.beta * margin)


def check_supported(algorithm: str, hparams: dict[str, Any] | None = None) -> None:
    """ConfigError naming the run (or the DPO loss type) unless attribution knows ``algorithm``'s loss."""
    if algorithm not in SUPPORTED:
        raise ConfigError("--run", f"drift attribution of {algorithm!r} runs is not supported yet (supported: {', '.join(SUPPORTED)})")
    losses = (hparams or {}).get("loss_type", ["sigmoid"])
    if algorithm == "dpo" and list(losses) != ["sigmoid"]:
        raise ConfigError("po.hparams.dpo.loss_type", f"drift attribution supports the sigmoid DPO loss only, got {losses}")


def make_loss(algorithm: str, tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int,
              hparams: dict[str, Any] | None = None) -> SFTLoss | DPOLoss:
    """The per-example loss of a run trained by ``algorithm`` (``sft`` or a po registry name)."""
    check_supported(algorithm, hparams)
    if algorithm == "sft":
        return SFTLoss(tokenizer, rows, max_length)
    return DPOLoss(tokenizer, rows, max_length, float((hparams or {}).get("beta", 0.1)))
