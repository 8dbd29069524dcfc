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

from collections.abc import Callable, Sequence
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


Recorder = Callable[[Callable[[], SharedPrefix | None]], SharedPrefix | None]
"""Runs a prefix build and returns its result (:meth:`PerExampleGrads.record_prefix` records its forward)."""


def _build_prefix(model: Any, requests: Sequence[Request | None], pad: int, record: Recorder | None) -> SharedPrefix | None:
    def build() -> SharedPrefix | None:
        return SharedPrefix.build(model, requests, pad)

    return build() if record is None else record(build)


Batch = tuple[torch.Tensor, list[int], list[int]]
"""(L(z_e; θ) for the examples e of a batch that have a loss, their indices, the example (position in that
list) of every row of the model batch) — what :class:`valuedrift.attribution.per_example.PerExampleGrads` reads."""


class ExampleLoss(Protocol):
    """L(z; θ) of training example ``i`` (a scalar tensor with gradients), or None if it has no loss;
    :meth:`batch` the same for several examples in one right-padded forward; :meth:`prepare` once per
    checkpoint (the shared-prefix cache, :mod:`valuedrift.attribution.sequences`, for the one-example path)."""

    prefix: SharedPrefix | None

    def prepare(self, model: Any, record: Recorder | None = None) -> None: ...

    def __call__(self, model: Any, i: int) -> torch.Tensor | None: ...

    def batch(self, model: Any, idx: Sequence[int]) -> Batch | None: ...

    def size(self, i: int) -> int: ...


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

    def prepare(self, model: Any, record: Recorder | None = None) -> None:
        self.prefix = _build_prefix(model, self.requests, self.pad, record)

    def __call__(self, model: Any, i: int) -> torch.Tensor | None:
        req = self.requests[i]
        if req is None:
            return None
        sums, lengths = request_logprobs(model, [req], self.pad, self.prefix)
        return -(sums[0] / lengths[0])

    def batch(self, model: Any, idx: Sequence[int]) -> Batch | None:
        live = [i for i in idx if self.requests[i] is not None]
        if not live:
            return None
        sums, lengths = request_logprobs(model, [r for i in live if (r := self.requests[i]) is not None], self.pad, self.prefix)
        return -(sums / lengths), live, list(range(len(live)))

    def size(self, i: int) -> int:
        """Tokens of example ``i``'s forward pass (0 without a loss): batches are formed in this order."""
        req = self.requests[i]
        return 0 if req is None else len(req.context) + len(req.continuation)


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

    def prepare(self, model: Any, record: Recorder | None = None) -> None:
        self.prefix = _build_prefix(model, [r for pair in self.requests for r in pair], self.pad, record)

    def _logps(self, model: Any, i: int) -> torch.Tensor | None:
        chosen, rejected = self.requests[i]
        if chosen is None or rejected is None:
            return None
        return request_logprobs(model, [chosen, rejected], self.pad, self.prefix)[0]

    def _live(self, idx: Sequence[int]) -> list[int]:
        return [i for i in idx if None not in self.requests[i]]

    def _batch_logps(self, model: Any, live: Sequence[int]) -> torch.Tensor:
        """(len(live), 2): log π(y_w|x), log π(y_l|x) of the pairs ``live``, one forward (rows 2e, 2e + 1)."""
        requests = [r for i in live for r in self.requests[i] if r is not None]
        return request_logprobs(model, requests, self.pad, self.prefix)[0].reshape(-1, 2)

    @torch.no_grad()
    def reference(self, model: Any, batch_size: int = 8) -> None:
        """log π_ref(y_w|x), log π_ref(y_l|x) of every pair on ``model`` (the start model), ``batch_size``
        pairs per forward."""
        live = self._live(range(len(self.rows)))
        self.ref = [None] * len(self.rows)
        for k in range(0, len(live), max(1, batch_size)):
            chunk = live[k : k + max(1, batch_size)]
            for i, lp in zip(chunk, self._batch_logps(model, chunk), strict=True):
                self.ref[i] = lp.detach()

    def __call__(self, model: Any, i: int) -> torch.Tensor | None:
        if not self.ref:
            raise RuntimeError("DPOLoss.reference(start model) must run first")
        lp, ref = self._logps(model, i), self.ref[i]
        if lp is None or ref is None:
            return None
        return self._loss(lp, ref)

    def _loss(self, lp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        margin = (lp[..., 0] - ref[..., 0]) - (lp[..., 1] - ref[..., 1])
        return -F.logsigmoid(self.beta * margin)

    def batch(self, model: Any, idx: Sequence[int]) -> Batch | None:
        if not self.ref:
            raise RuntimeError("DPOLoss.reference(start model) must run first")
        live = [i for i in self._live(idx) if self.ref[i] is not None]
        if not live:
            return None
        ref = torch.stack([r for i in live if (r := self.ref[i]) is not None])
        return self._loss(self._batch_logps(model, live), ref), live, [k for k in range(len(live)) for _ in (0, 1)]

    def size(self, i: int) -> int:
        """Tokens of pair ``i``'s two rows (0 without a loss)."""
        return sum(len(r.context) + len(r.continuation) for r in self.requests[i] if r is not None) if None not in self.requests[i] else 0


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
