"""A shared-prefix prefill for the quick judged route's sampling call (a lead, measured; not adopted).

Every chat prompt of the quick route starts with the same 24 tokens (system prompt + user-turn header).
The shipped call (:func:`valuedrift.stance.sampling.generate_samples`) left-pads the 48 prompts into one
batch and prefills each whole prompt once (48 × 73 positions). The prototype here prefills the common prefix
once, repeats its KV cache 48 times, then prefills each prompt's rest left-padded *after* the prefix (the
padding sits in the middle; position ids come from the attention mask, so every real token keeps its
position), repeats the cache K times and decodes as before (24 + 48 × 49 positions).

Checked, not assumed: the shipped side *is* ``generate_samples`` with ``eval.quick``'s settings from
params.yaml; the prototype runs the same rows in the same order from the same RNG seed, and their answers
are compared row by row (the script exits non-zero if any differs). Timed: ``--calls`` interleaved rounds
after that first (warm-up) call of each.

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

from valuedrift.config.load import load_params  # noqa: E402
from valuedrift.data.probes import load_probe_bank, select_probes  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402
from valuedrift.stance import sampling  # noqa: E402
from valuedrift.stance.likelihood import format_prompt  # noqa: E402
from valuedrift.stance.sampling import generate_samples  # noqa: E402


def shared(model: Any, tok: Any, prompts: list[str], q: Any, seed: int) -> list[str]:
    """The prototype, for one batch of ``prompts`` in generate_samples' row order and RNG seed: the common
    prefix prefilled once (1 row, repeated B times), every prompt's rest left-padded after it (padding in the
    middle; positions from the mask), the cache repeated K times, then the same ``generate`` call."""
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in prompts]
    p = shared_prefix(ids)
    eos = sampling.eos_ids(model, tok)
    with torch.inference_mode():
        pre = torch.tensor([ids[0][:p]])
        cache = model(input_ids=pre, use_cache=True, logits_to_keep=1).cache
        b = len(ids)
        cache.batch_repeat_interleave(b)
        suf = [x[p:-1] for x in ids]
        width = max(len(x) for x in suf)
        suf_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in suf])
        full = torch.cat([torch.ones(b, p, dtype=torch.long),
                          torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in suf])], 1)
        pos = (full.cumsum(-1) - 1).clamp(min=0)[:, p:]
        model(input_ids=suf_ids, attention_mask=full, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(q.k)
        last = torch.tensor([[x[-1]] for x in ids])
        inp = torch.cat([pre.expand(b, -1), suf_ids, last], 1).repeat_interleave(q.k, 0)
        mask = torch.cat([full, torch.ones(b, 1, dtype=torch.long)], 1).repeat_interleave(q.k, 0)
        torch.manual_seed(seed)
        out = model.generate(input_ids=inp, attention_mask=mask, cache=cache, do_sample=True, temperature=q.temperature,
                             top_p=q.top_p, top_k=0, max_new_tokens=q.max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=sorted(eos))
    texts = []
    for row in out[:, inp.shape[1]:].tolist():  # cut at the first end-of-sequence token, as generate_samples does
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        texts.append(tok.decode(row if stop is None else row[:stop], skip_special_tokens=True).strip())
    return texts


def shared_prefix(ids: list[list[int]]) -> int:
    """Length of the token prefix every prompt shares (never a prompt's last token)."""
    p = 0
    while all(len(x) > p + 1 and x[p] == ids[0][p] for x in ids):
        p += 1
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--params", default="params.yaml", help="eval.quick, eval.splits, the probe seed and prompt format come from here")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/shared_prefix.json")
    a = ap.parse_args()
    params = load_params(a.params)
    ev, q, seed = params.eval, params.eval.quick, params.probe_seed
    probes = select_probes(load_probe_bank("data"), q.probes_per_topic, ev.splits, seed)
    if q.batch_size < len(probes):
        raise SystemExit(f"eval.quick.batch_size {q.batch_size} < {len(probes)} probes: the prototype runs one batch")
    model, tok = load_model(a.model), load_tokenizer(a.model)
    model.eval()
    text = {pr.id: format_prompt(tok, pr.question, ev.prompt_format, ev.system_prompt) for pr in probes}
    length = {i: len(tok(t, add_special_tokens=False)["input_ids"]) for i, t in text.items()}
    order = sorted(text, key=lambda i: (-length[i], i))  # generate_samples' row order, hence its RNG draws
    run = {"shipped": lambda: [x.text for x in generate_samples(
               model, tok, probes, k=q.k, temperature=q.temperature, top_p=q.top_p, max_new_tokens=q.max_new_tokens,
               batch_size=q.batch_size, seed=seed, prompt_format=ev.prompt_format, system_prompt=ev.system_prompt)],
           "shared": lambda: shared(model, tok, [text[i] for i in order], q, sampling.batch_seed(seed, order))}
    answers = {name: fn() for name, fn in run.items()}  # also the warm-up
    by_probe = {i: answers["shared"][r * q.k:(r + 1) * q.k] for r, i in enumerate(order)}
    shared_rows = [t for pr in probes for t in by_probe[pr.id]]  # back to probe order, as generate_samples returns
    equal = sum(x == y for x, y in zip(answers["shipped"], shared_rows, strict=True))
    walls: dict[str, list[float]] = {k: [] for k in run}
    for _ in range(a.calls):
        for name, fn in run.items():
            start = time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - start)
    lengths = list(length.values())
    p = shared_prefix([tok(text[i], add_special_tokens=False)["input_ids"] for i in order])
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch_threads": torch.get_num_threads(),
              "loadavg": list(os.getloadavg()), "probes": len(probes), "k": q.k, "new_tokens": q.max_new_tokens,
              "shared_prefix_tokens": p,
              "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths)},
              "prefill_positions": {"shipped": len(probes) * (max(lengths) - 1), "shared": p + len(probes) * (max(lengths) - p - 1)},
              "rows_equal_of": len(shared_rows), "rows_equal": equal, "wall_s": walls,
              "speedup_shared": statistics.median(walls["shipped"]) / statistics.median(walls["shared"])}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if equal != len(shared_rows):
        raise SystemExit(f"the prototype's answers differ from generate_samples' in {len(shared_rows) - equal} rows")


if __name__ == "__main__":
    main()
