"""The quick judged route's sampling call with and without the shared-start prefill (adopted 2026-12-06).

Every chat prompt of the quick route starts with the same 24 tokens (system prompt + user-turn header).
``generate_samples(shared_prefix=False)`` (the code before 2026-12-06) left-pads the 48 prompts into one batch
and prefills each whole prompt once (48 × 73 positions). The default prefills the common start once, repeats
its KV cache 48 times, then prefills each prompt's rest left-padded *after* it (24 + 48 × 49 positions;
:mod:`valuedrift.stance.sampling`).

Both sides are :func:`valuedrift.stance.sampling.generate_samples` with ``eval.quick``'s settings from
params.yaml (same rows, order and RNG seed); their answers are compared row by row (the script exits non-zero
if any differs). Timed: ``--calls`` interleaved rounds after a first (warm-up) call of each.

    .venv/bin/python benchmarks/bench_shared_prefix.py --out benchmarks/results/shared_prefix.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from valuedrift.config.load import load_params  # noqa: E402
from valuedrift.data.probes import load_probe_bank, select_probes  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402
from valuedrift.stance.likelihood import format_prompt  # noqa: E402
from valuedrift.stance.sampling import common_prefix, generate_samples  # noqa: E402


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
    model, tok = load_model(a.model), load_tokenizer(a.model)
    model.eval()

    def call(shared: bool) -> list[str]:
        return [x.text for x in generate_samples(
            model, tok, probes, k=q.k, temperature=q.temperature, top_p=q.top_p, max_new_tokens=q.max_new_tokens,
            batch_size=q.batch_size, seed=seed, prompt_format=ev.prompt_format, system_prompt=ev.system_prompt,
            shared_prefix=shared)]

    run = {"per_prompt": lambda: call(False), "shared": lambda: call(True)}
    answers = {name: fn() for name, fn in run.items()}  # also the warm-up
    equal = sum(x == y for x, y in zip(answers["per_prompt"], answers["shared"], strict=True))
    walls: dict[str, list[float]] = {k: [] for k in run}
    for _ in range(a.calls):
        for name, fn in run.items():
            start = time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - start)
    ids = [tok(format_prompt(tok, pr.question, ev.prompt_format, ev.system_prompt), add_special_tokens=False)["input_ids"] for pr in probes]
    lengths = [len(x) for x in ids]
    batches = [sorted(lengths, reverse=True)[i:i + q.batch_size] for i in range(0, len(lengths), q.batch_size)]
    p = common_prefix(ids)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch_threads": torch.get_num_threads(),
              "loadavg": list(os.getloadavg()), "probes": len(probes), "k": q.k, "new_tokens": q.max_new_tokens,
              "batch_size": q.batch_size, "shared_prefix_tokens": p,
              "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths)},
              "prefill_positions": {"per_prompt": sum(len(b) * (b[0] - 1) for b in batches),
                                    "shared": sum(p + len(b) * (b[0] - p - 1) for b in batches)},
              "rows_equal_of": len(answers["shared"]), "rows_equal": equal, "wall_s": walls,
              "speedup_shared": statistics.median(walls["per_prompt"]) / statistics.median(walls["shared"])}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if equal != len(answers["shared"]):
        raise SystemExit(f"the shared-start answers differ from the per-prompt ones in {len(answers['shared']) - equal} rows")


if __name__ == "__main__":
    main()
