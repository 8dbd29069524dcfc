"""Paper-route sampling throughput: our batched sampling against a per-probe ``generate`` loop, side by side.

- batched: :func:`valuedrift.stance.sampling.generate_samples` (``--batch-size`` probes per call, each
  prompt prefilled once and its KV cache repeated K times, K·batch sequences decoded together);
- per_probe: the plain loop a user would write, one ``model.generate(num_return_sequences=K)`` per probe
  (:func:`per_probe_loop`).

Same probes, prompts, sampling settings and stop tokens. Reported: generated answer tokens per second
(tokens up to each answer's end-of-sequence), median over rounds whose order alternates, and the median
of the per-round ratios.

Run: ``.venv/bin/python benchmarks/bench_sampling.py`` (bundled model in models/base).
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

from valuedrift.data.probes import load_probe_bank, select_probes  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402
from valuedrift.stance.likelihood import format_prompt  # noqa: E402
from valuedrift.stance.sampling import eos_ids, generate_samples  # noqa: E402


@torch.inference_mode()
def per_probe_loop(model, tok, probes, *, k: int, max_new_tokens: int, seed: int, temperature: float = 0.7) -> int:
    """Baseline: one ``generate(num_return_sequences=k)`` call per probe; returns answer tokens generated."""
    eos = sorted(eos_ids(model, tok))
    tokens = 0
    for p in probes:
        enc = tok(format_prompt(tok, p.question, "chat", None), return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(seed * 100_003 + p.id)
        out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                             num_return_sequences=k, pad_token_id=tok.pad_token_id or eos[0], eos_token_id=eos)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += next((t for t, tok_id in enumerate(row) if tok_id in eos), len(row))
    return tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_sampling", description=__doc__)
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--probes-per-topic", type=int, default=1, help="probes per (split, topic): 12 groups")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=12, help="probes per generate call on the batched side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/sampling.json")
    a = ap.parse_args(argv)
    tok, model = load_tokenizer(a.model), load_model(a.model)
    probes = select_probes(load_probe_bank("data"), a.probes_per_topic, ["dev", "test"], seed=0)
    results: dict[str, list[float]] = {"batched": [], "per_probe": []}
    for r in range(a.repeats):
        for name in (["batched", "per_probe"] if r % 2 == 0 else ["per_probe", "batched"]):
            t0 = time.perf_counter()
            if name == "batched":
                samples = generate_samples(model, tok, probes, k=a.k, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, seed=r)
                tokens = sum(s.new_tokens for s in samples)
            else:
                tokens = per_probe_loop(model, tok, probes, k=a.k, max_new_tokens=a.max_new_tokens, seed=r)
            dt = time.perf_counter() - t0
            results[name].append(tokens / dt)
            print(f"round {r} {name:9s}: {results[name][-1]:.1f} tokens/s ({dt:.1f} s)", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    ratio = statistics.median(b / p for b, p in zip(results["batched"], results["per_probe"], strict=True))
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(a), "n_probes": len(probes),
           "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "tokens_per_s": results,
           "median_tokens_per_s": med, "ratio_batched_vs_per_probe": ratio}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"batched {med['batched']:.1f} tokens/s, per-probe loop {med['per_probe']:.1f} tokens/s, ratio {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
