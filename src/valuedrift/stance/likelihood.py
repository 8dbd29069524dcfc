"""Likelihood route: stance distribution of a probe from the log-likelihood of its stance statements.

For probe p with chat-formatted prompt x(p) and stance statements a_s(p), s ∈ {support, neutral, oppose}:

    ℓ_s(p) = (1 / |a_s|) Σ_i log π(a_s,i | x(p), a_s,<i)        (mean token log-prob, length-normalised)
    q(p)   = softmax(ℓ(p) / τ)                                     (τ = eval.temperature, 1 by default)

Here: the prompt x(p) (:func:`format_prompt`), the three requests (x(p), a_s(p)) of a probe
(:func:`build_requests`), q(p) from their scores (:func:`stance_distributions`) and the probe scorer
(:class:`LikelihoodScorer`). The sums Σ_i log π are computed, exactly and fast, by
:func:`valuedrift.stance.request_scoring.score_requests`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuedrift.core.chat_templates import CHAT_TEMPLATES
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES
from valuedrift.data.schemas import Probe
from valuedrift.stance.request_scoring import Request, score_requests


def require_chat_template(tokenizer: Any) -> None:
    """ConfigError naming ``model.chat_template`` unless ``tokenizer`` has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        raise ConfigError(
            "model.chat_template",
            f"eval.prompt_format is 'chat' but the tokenizer of {name} has no chat template (a base model?): set "
            f"model.chat_template to one of {', '.join(CHAT_TEMPLATES)} or a Jinja file, or eval.prompt_format: plain",
        )


def format_prompt(tokenizer: Any, question: str, prompt_format: str = "chat", system_prompt: str | None = None) -> str:
    """The probe as the model sees it: its chat template with a generation prompt (``chat``; a tokenizer
    without a template is an error, :func:`require_chat_template`), or plain Q/A text (``plain``)."""
    if prompt_format == "chat":
        require_chat_template(tokenizer)
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prefix = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{prefix}Question: {question}\nAnswer:"


def build_requests(
    tokenizer: Any, probes: Sequence[Probe], prompt_format: str = "chat", system_prompt: str | None = None
) -> list[Request]:
    """Three requests per probe, in the order of :data:`STANCES`."""
    out = []
    for p in probes:
        if p.statements is None:
            raise ValueError(f"probe {p.id} has no stance statements")
        ctx = tuple(tokenizer(format_prompt(tokenizer, p.question, prompt_format, system_prompt), add_special_tokens=False)["input_ids"])
        for s in STANCES:
            text = p.statements[s] if prompt_format == "chat" else " " + p.statements[s]
            cont = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            out.append(Request(ctx, cont))
    return out


def stance_distributions(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(3n, 2) request scores -> (n, 3) stance distributions q(p) = softmax(ℓ/τ), ℓ = mean token log-prob."""
    mean_lp = (scores[:, 0] / scores[:, 1]).reshape(-1, len(STANCES))
    z = mean_lp / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class LikelihoodScorer:
    """Scores probes on a model: returns one row per probe with q(p) and the raw ℓ_s."""

    tokenizer: Any
    temperature: float = 1.0
    batch_size: int = 16
    prompt_format: str = "chat"
    system_prompt: str | None = None

    def score(self, model: Any, probes: Sequence[Probe], progress: bool = False) -> list[dict[str, Any]]:
        requests = build_requests(self.tokenizer, probes, self.prompt_format, self.system_prompt)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores = score_requests(model, requests, self.batch_size, pad, progress)
        q = stance_distributions(scores, self.temperature)
        mean_lp = (scores[:, 0] / scores[:, 1]).reshape(-1, len(STANCES))
        rows = []
        for k, p in enumerate(probes):
            row: dict[str, Any] = {"probe_id": p.id, "topic": p.topic, "split": p.split}
            for j, s in enumerate(STANCES):
                row[s] = float(q[k, j])
                row[f"ll_{s}"] = float(mean_lp[k, j])
            rows.append(row)
        return rows
