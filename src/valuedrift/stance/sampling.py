"""Batched, seeded sampling of K answers per probe (the first half of the paper route).

For each probe p the policy π sees the same prompt x(p) as on the likelihood route
(:func:`valuedrift.stance.likelihood.format_prompt`) and we draw

    y_1, …, y_K ~ π(· | x(p))     (temperature T, nucleus top_p, top-k off, ≤ max_new_tokens new tokens)

Many probes share one ``generate`` call: ``batch_size`` prompts, left-padded, each expanded to K sequences,
so one call decodes batch_size·K sequences in parallel. Prompts are sorted by length so a batch pads
little. The K samples of a probe share its prompt, so the prompt is run once, not K times: the batch's
prompts minus their last token are prefilled once (``use_cache``), the KV cache is repeated K times along
the batch (``DynamicCache.batch_repeat_interleave``), and ``generate(cache=…)`` continues from it, feeding only the
last prompt token before decoding. This removes (K − 1)/K of the prefill FLOPs; the sampled tokens are
those of plain ``num_return_sequences=K`` sampling up to float rounding (same RNG draws).

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


def _shared_prefill(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, k: int) -> Any:
    """KV cache of every prompt but its last token, computed once per prompt and repeated ``k`` times.

    Returns None (plain generation) for one-token prompts or models whose cache cannot be repeated.
    """
    if input_ids.shape[1] < 2:
        return None
    mask = attention[:, :-1]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids[:, :-1], attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.cache
    if k > 1:
        if not hasattr(cache, "batch_repeat_interleave"):
            return None
        cache.batch_repeat_interleave(k)
    return cache


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
) -> list[Sample]:
    """Sample ``k`` answers per probe; returns them ordered by (probe order, sample index)."""
    if k < 1 or max_new_tokens < 1 or batch_size < 1 or temperature <= 0:
        raise ValueError(f"bad sampling settings: k={k}, max_new_tokens={max_new_tokens}, batch_size={batch_size}, temperature={temperature}")
    prompts = {p.id: format_prompt(tokenizer, p.question, prompt_format, system_prompt) for p in probes}
    lengths = {pid: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for pid, text in prompts.items()}
    order = sorted((p.id for p in probes), key=lambda pid: (-lengths[pid], pid))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos), 0)
    device = next(model.parameters()).device
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    by_probe: dict[int, list[Sample]] = {}
    try:
        for ids in tqdm(batches, desc=f"sampling {k}×/probe", disable=not progress, leave=False):
            enc = tokenizer([prompts[i] for i in ids], return_tensors="pt", padding=True, add_special_tokens=False)
            input_ids, attention = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            cache = _shared_prefill(model, input_ids, attention, k)
            torch.manual_seed(batch_seed(seed, ids))
            out = model.generate(
                input_ids=input_ids.repeat_interleave(k, dim=0),
                attention_mask=attention.repeat_interleave(k, dim=0),
                cache=cache,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=sorted(eos) or None,
            )
            new = out[:, enc["input_ids"].shape[1] :].cpu()
            for row in range(new.shape[0]):
                pid, j = ids[row // k], row % k
                toks = new[row].tolist()
                stop = next((t for t, tok in enumerate(toks) if tok in eos), None)
                kept = toks if stop is None else toks[:stop]
                text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                by_probe.setdefault(pid, []).append(Sample(pid, j, text, len(kept), stop is not None))
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return [s for p in probes for s in by_probe[p.id]]
