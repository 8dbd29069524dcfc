"""Batched, seeded sampling of K answers per probe (the first half of the paper route).

For each probe p the policy π sees the same prompt x(p) as on the likelihood route
(:func:`valuedrift.stance.likelihood.format_prompt`) and we draw

    y_1, …, y_K ~ π(· | x(p))     (temperature T, nucleus top_p, top-k off, ≤ max_new_tokens new tokens)

Many probes share one ``generate`` call: ``batch_size`` prompts, each expanded to K sequences, so one call
decodes batch_size·K sequences in parallel. Prompts are sorted by length so a batch pads little. The
prompts are prefilled once, not K times, and their common start once, not batch_size times:

1. the P tokens every prompt of the batch starts with (the chat template's system turn and user header:
   24 tokens for SmolLM2's template) are run once, as one row, and the KV cache repeated batch_size times;
2. each prompt's rest minus its last token is run on top of it, left-padded *after* the shared start (the
   padding sits in the middle, masked; position ids come from the attention mask, so every real token keeps
   the position it has in its own prompt);
3. the cache is repeated K times along the batch (``DynamicCache.batch_repeat_interleave``) and
   ``generate(cache=…)`` continues from it, feeding only each prompt's last token before decoding.

A batch of B prompts of at most L tokens prefills P + B·(L − P − 1) positions instead of B·K·L. The sampled
tokens are those of plain left-padded ``num_return_sequences=K`` sampling up to float rounding (same RNG
draws); ``shared_prefix=False`` skips step 1 (``benchmarks/bench_shared_prefix.py`` compares the two, answer
for answer).

Seeding: before each batch the torch RNG is seeded with hash(seed, probe ids of the batch), so the same
seed, probes and batch size give the same answers whatever ran before (on the same hardware and library
versions).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from valuedrift.data.schemas import Probe
from valuedrift.stance.likelihood import format_prompt


@dataclass(frozen=True)
class Sample:
    """One sampled answer y_k to probe ``probe_id``; ``finished`` = it ended with an end-of-sequence token."""

    probe_id: int
    sample: int
    text: str
    new_tokens: int
    finished: bool

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def batch_seed(seed: int, probe_ids: Sequence[int]) -> int:
    """Seed of one generation batch: CRC32 of the run seed and the batch's probe ids."""
    return zlib.crc32(f"{seed}:{','.join(map(str, probe_ids))}".encode())


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end an answer: the generation config's eos id(s) and the tokenizer's."""
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = ids if isinstance(ids, list) else [ids]
    out = {i for i in ids if i is not None}
    if tokenizer.eos_token_id is not None:
        out.add(tokenizer.eos_token_id)
    return out


def common_prefix(ids: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens every prompt in ``ids`` shares, never a prompt's last token."""
    n = min(len(x) for x in ids) - 1
    p = 0
    while p < n and all(x[p] == ids[0][p] for x in ids):
        p += 1
    return p


def _prefill(model: Any, ids: Sequence[Sequence[int]], k: int, pad: int, device: Any, shared_prefix: bool) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``generate``'s input ids and attention mask for a batch of prompts (token id lists), each row repeated
    ``k`` times, and the KV cache of every prompt but its last token (steps 1–3 of the module docstring).

    Rows are [shared start | padding | rest of the prompt but its last token | last token]. The cache is None
    (``generate`` prefills itself) when there is nothing to prefill or the model's cache cannot be repeated.
    """
    p = common_prefix(ids) if shared_prefix else 0
    rest = [list(x[p:-1]) for x in ids]
    width = max(len(r) for r in rest)
    b = len(ids)
    start = torch.tensor([list(ids[0][:p])] * b, dtype=torch.long).reshape(b, p)
    body = torch.tensor([[pad] * (width - len(r)) + r for r in rest], dtype=torch.long).reshape(b, width)
    body_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rest], dtype=torch.long).reshape(b, width)
    last = torch.tensor([[x[-1]] for x in ids], dtype=torch.long)
    input_ids = torch.cat([start, body, last], dim=1).to(device)
    attention = torch.cat([torch.ones(b, p, dtype=torch.long), body_mask, torch.ones(b, 1, dtype=torch.long)], dim=1).to(device)
    repeated = input_ids.repeat_interleave(k, dim=0), attention.repeat_interleave(k, dim=0)
    cache = None
    if p:
        cache = model(input_ids=input_ids[:1, :p], use_cache=True, logits_to_keep=1).cache
        if not hasattr(cache, "batch_repeat_interleave"):
            return *repeated, None
        cache.batch_repeat_interleave(b)
    if width:
        mask = attention[:, : p + width]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
        cache = model(input_ids=input_ids[:, p : p + width], attention_mask=mask, position_ids=positions, cache=cache,
                      use_cache=True, logits_to_keep=1).cache
    if cache is None or (k > 1 and not hasattr(cache, "batch_repeat_interleave")):
        return *repeated, None
    if k > 1:
        cache.batch_repeat_interleave(k)
    return *repeated, cache


@torch.inference_mode()
def generate_samples(
    model: Any,
    tokenizer: Any,
    probes: Sequence[Probe],
    *,
    k: int = 5,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    prompt_format: str = "chat",
    system_prompt: str | None = None,
    progress: bool = False,
    shared_prefix: bool = True,
) -> list[Sample]:
    """Sample ``k`` answers per probe; returns them ordered by (probe order, sample index). ``shared_prefix``:
    prefill the batch's common start once (module docstring)."""
    if k < 1 or max_new_tokens < 1 or batch_size < 1 or temperature <= 0:
        raise ValueError(f"bad sampling settings: k={k}, max_new_tokens={max_new_tokens}, batch_size={batch_size}, temperature={temperature}")
    prompts = {p.id: format_prompt(tokenizer, p.question, prompt_format, system_prompt) for p in probes}
    tokens = {pid: tokenizer(text, add_special_tokens=False)["input_ids"] for pid, text in prompts.items()}
    order = sorted((p.id for p in probes), key=lambda pid: (-len(tokens[pid]), pid))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos), 0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    by_probe: dict[int, list[Sample]] = {}
    try:
        for ids in tqdm(batches, desc=f"sampling {k}×/probe", disable=not progress, leave=False):
            input_ids, attention, cache = _prefill(model, [tokens[i] for i in ids], k, pad, device, shared_prefix)
            torch.manual_seed(batch_seed(seed, ids))
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                cache=cache,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=sorted(eos) or None,
            )
            new = out[:, input_ids.shape[1] :].cpu()
            for row in range(new.shape[0]):
                pid, j = ids[row // k], row % k
                toks = new[row].tolist()
                stop = next((t for t, tok in enumerate(toks) if tok in eos), None)
                kept = toks if stop is None else toks[:stop]
                text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                by_probe.setdefault(pid, []).append(Sample(pid, j, text, len(kept), stop is not None))
    finally:
        if was_training:
            model.train()
    return [s for p in probes for s in by_probe[p.id]]
