"""A shared-prefix prefill for the quick judged route's sampling call (a lead, measured; not adopted).

Every chat prompt of the quick route starts with the same 24 tokens (system prompt + user-turn header).
The shipped call (:func:`valuedrift.stance.sampling.generate_samples`) left-pads the 48 prompts into one
batch and prefills each whole prompt once (48 × 73 positions). The prototype here prefills the common prefix
once, repeats its KV cache 48 times, then prefills each prompt's rest left-padded *after* the prefix (the
padding sits in the middle; position ids come from the attention mask, so every real token keeps its
position), repeats the cache K times and decodes as before (24 + 48 × 49 positions).

Checked, not assumed: greedy and sampled (same seed) answers of both, row by row. Timed: the sampled call
(48 probes × k = 3, ≤ 24 tokens, temperature 0.7), ``--calls`` interleaved rounds after a warm-up.

    .venv/bin/python benchmarks/bench_shared_prefix.py --out benchmarks/results/shared_prefix.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from valuedrift.data.probes import load_probe_bank, select_probes  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402
from valuedrift.stance import sampling  # noqa: E402
from valuedrift.stance.likelihood import format_prompt  # noqa: E402

K, T = 3, 24  # eval.quick.k, eval.quick.max_new_tokens


def decoding(do_sample: bool) -> dict[str, Any]:
    """``generate`` keywords: the quick route's sampling (temperature 0.7, top-k off), or greedy."""
    if do_sample:
        return {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "top_k": 0}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@torch.inference_mode()
def shared(model: Any, tok: Any, ids: list[list[int]], p: int, do_sample: bool, seed: int = 0) -> torch.Tensor:
    """The prototype: the common prefix prefilled once (1 row, repeated B times), then every prompt's rest
    left-padded after it (padding in the middle; positions from the mask), repeated K times, then generate."""
    pre = torch.tensor([ids[0][:p]])
    out = model(input_ids=pre, use_cache=True, logits_to_keep=1)
    cache = out.cache
    B = len(ids)
    cache.batch_repeat_interleave(B)
    suf = [x[p:-1] for x in ids]
    S = max(len(x) for x in suf)
    suf_ids = torch.tensor([[tok.pad_token_id] * (S - len(x)) + x for x in suf])
    suf_mask = torch.tensor([[0] * (S - len(x)) + [1] * len(x) for x in suf])
    full = torch.cat([torch.ones(B, p, dtype=torch.long), suf_mask], 1)
    pos = (full.cumsum(-1) - 1).clamp(min=0)[:, p:]
    model(input_ids=suf_ids, attention_mask=full, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(K)
    last = torch.tensor([[x[-1]] for x in ids])
    inp = torch.cat([pre.expand(B, -1), suf_ids, last], 1).repeat_interleave(K, 0)
    mask = torch.cat([full, torch.ones(B, 1, dtype=torch.long)], 1).repeat_interleave(K, 0)
    torch.manual_seed(seed)
    g = model.generate(input_ids=inp, attention_mask=mask, cache=cache,
                       **decoding(do_sample),
                       max_new_tokens=T, pad_token_id=tok.pad_token_id, eos_token_id=sorted(sampling.eos_ids(model, tok)))
    return g[:, inp.shape[1]:]


@torch.inference_mode()
def shipped(model: Any, tok: Any, prompts: list[str], do_sample: bool, seed: int = 0) -> torch.Tensor:
    """What :func:`valuedrift.stance.sampling.generate_samples` does for one batch (its prefill, then generate)."""
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    cache = sampling._shared_prefill(model, enc["input_ids"], enc["attention_mask"], K)
    torch.manual_seed(seed)
    g = model.generate(input_ids=enc["input_ids"].repeat_interleave(K, 0), attention_mask=enc["attention_mask"].repeat_interleave(K, 0),
                       cache=cache,
                       **decoding(do_sample),
                       max_new_tokens=T, pad_token_id=tok.pad_token_id, eos_token_id=sorted(sampling.eos_ids(model, tok)))
    return g[:, enc["input_ids"].shape[1]:]


def texts(tok: Any, eos: list[int], g: torch.Tensor) -> list[str]:
    """Decoded answers, cut at the first end-of-sequence token (as generate_samples cuts them)."""
    out = []
    for row in g.tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        out.append(tok.decode(row if stop is None else row[:stop], skip_special_tokens=True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/shared_prefix.json")
    a = ap.parse_args()
    model, tok = load_model(a.model), load_tokenizer(a.model)
    model.eval()
    probes = select_probes(load_probe_bank("data"), 4, ["dev", "test"], 0)
    prompts = [format_prompt(tok, q.question, "chat", None) for q in probes]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in prompts]
    p = 0
    while all(len(x) > p + 1 and x[p] == ids[0][p] for x in ids):
        p += 1
    eos = sorted(sampling.eos_ids(model, tok))
    run = {"shipped": lambda s: shipped(model, tok, prompts, s), "shared": lambda s: shared(model, tok, ids, p, s)}
    same = {mode: sum(x == y for x, y in zip(texts(tok, eos, run["shipped"](mode == "sampled")),
                                             texts(tok, eos, run["shared"](mode == "sampled")), strict=True))
            for mode in ("greedy", "sampled")}
    walls: dict[str, list[float]] = {k: [] for k in run}
    for _ in range(a.calls):
        for name, fn in run.items():
            start = time.perf_counter()
            fn(True)
            walls[name].append(time.perf_counter() - start)
    lengths = [len(x) for x in ids]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch_threads": torch.get_num_threads(),
              "loadavg": list(os.getloadavg()), "probes": len(ids), "k": K, "new_tokens": T, "shared_prefix_tokens": p,
              "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths)},
              "prefill_positions": {"shipped": len(ids) * (max(lengths) - 1), "shared": p + len(ids) * (max(lengths) - p - 1)},
              "rows_equal_of": len(ids) * K, "rows_equal": same, "wall_s": walls,
              "speedup_shared": statistics.median(walls["shipped"]) / statistics.median(walls["shared"])}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
