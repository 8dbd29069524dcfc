"""Differentiable Σ_i log π_θ(c_i | x, c_<i) for a batch of (context x, continuation c) token requests.

The same sum as :func:`valuedrift.stance.request_scoring.score_requests` (which runs under
``torch.inference_mode`` and returns numbers), computed with autograd so that ∇_θ of anything built on it
can be taken: one right-padded forward over x + c[:-1], the LM head only at the positions whose next token
is scored (``logits_to_keep`` as a boolean mask), log-softmax in float32.

**Shared prefix** (:class:`SharedPrefix`): training rows open with the same chat-template tokens (SmolLM2's
default system prompt: about a third of an SFT row). Their KV cache is computed once per checkpoint *with*
autograd, and every request continues from it, so the gradient through the prefix's keys and values is kept
and the result stays exact; backward passes then keep the shared graph (``retain_graph=True``).
:meth:`SharedPrefix.build` checks the first request against the plain forward and returns None (with a
warning) where the model does not reproduce it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from valuedrift.stance.request_scoring import Request, shared_prefix_length, validate_requests

log = logging.getLogger(__name__)


@dataclass
class SharedPrefix:
    """The first ``length`` tokens every request's context starts with, and their per-layer (keys, values)."""

    length: int
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    cache_kw: str
    expanded: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def build(cls, model: Any, requests: Sequence[Request | None], pad_id: int) -> SharedPrefix | None:
        """The prefix of the non-None ``requests`` (None if there is none or the model does not reproduce
        the plain forward from it)."""
        live = [r for r in requests if r is not None]
        if len(live) < 2 or (length := shared_prefix_length(live)) < 1:
            return None
        try:
            params = inspect.signature(model.forward).parameters
            cache_kw = "cache" if "cache" in params else "past_key_values"
            device = next(model.parameters()).device
            out = model(input_ids=torch.tensor([live[0].context[:length]], device=device), use_cache=True, logits_to_keep=1)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            prefix = cls(length, [(layer.keys, layer.values) for layer in cache.layers], cache_kw)
            with torch.no_grad():
                plain, _ = request_logprobs(model, live[:1], pad_id)
                cached, _ = request_logprobs(model, live[:1], pad_id, prefix)
            if not torch.allclose(plain, cached, rtol=1e-4, atol=1e-4):
                raise ValueError(f"{float(cached[0]):.6f} against {float(plain[0]):.6f} without it")
        except Exception as e:  # noqa: BLE001 - any failure means: no prefix sharing for this model
            log.warning("attribution: no shared-prefix cache for %s (%s: %s); every row runs in full",
                        type(model).__name__, type(e).__name__, e)
            return None
        return prefix

    def cache(self, model: Any, batch: int) -> Any:
        """A fresh cache holding the prefix for ``batch`` rows (linked to the prefix's graph); the expanded
        (keys, values) of each layer stay in ``self.expanded`` until the next call, so that a backward can
        ask for each row's gradient at them (:mod:`valuedrift.attribution.per_example`)."""
        from transformers import DynamicCache

        self.expanded = [(k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:])) for k, v in self.kv]
        return DynamicCache(ddp_cache_data=self.expanded, config=model.config)


def request_logprobs(
    model: Any, requests: Sequence[Request], pad_id: int, prefix: SharedPrefix | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ log π(c | x), |c|) per request as float32 tensors; the sums carry gradients w.r.t. the
    parameters that require them. With ``prefix``, every context must start with its tokens."""
    validate_requests(requests)
    device = next(model.parameters()).device
    skip = prefix.length if prefix is not None else 0
    seqs = [(r.context + r.continuation[:-1])[skip:] for r in requests]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), skip + width), dtype=torch.long)
    mask[:, :skip] = 1
    keep = torch.zeros((len(seqs), width), dtype=torch.bool)
    targets: list[int] = []
    owner: list[int] = []
    for row, (r, s) in enumerate(zip(requests, seqs, strict=True)):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, skip : skip + len(s)] = 1
        start = len(r.context) - 1 - skip  # logits at position t predict token t + 1
        keep[row, start : start + len(r.continuation)] = True
        targets += r.continuation  # kept positions are read row-major, in token order within a row
        owner += [row] * len(r.continuation)
    keep_d = keep.to(device)
    kwargs = {prefix.cache_kw: prefix.cache(model, len(seqs)), "use_cache": True} if prefix is not None else {}
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep_d, **kwargs).logits
    if logits.ndim == 3:  # a model that ignores a boolean logits_to_keep returns every position
        logits = logits[keep_d]
    lp = torch.log_softmax(logits.float(), dim=-1)
    tok = lp[torch.arange(len(targets), device=device), torch.tensor(targets, device=device)]
    sums = torch.zeros(len(requests), dtype=torch.float32, device=device).index_add(0, torch.tensor(owner, device=device), tok)
    lengths = torch.tensor([len(r.continuation) for r in requests], dtype=torch.float32, device=device)
    return sums, lengths
