"""Paper-route sampling throughput: batched sampling (K answers per probe, many probes per generate call)
against a per-probe ``generate`` loop (K answers of one probe per call), side by side in one process.

Both run :func:`valuedrift.stance.sampling.generate_samples` on the same probes with the same settings;
only ``batch_size`` (probes per call) differs. Reported: generated answer tokens per second (tokens up to
each answer's end-of-sequence), median over rounds whose order alternates, and the ratio.

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
from valuedrift.stance.sampling import generate_samples  # noqa: E402


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
            bs = a.batch_size if name == "batched" else 1
            t0 = time.perf_counter()
            samples = generate_samples(model, tok, probes, k=a.k, max_new_tokens=a.max_new_tokens, batch_size=bs, seed=r)
            dt = time.perf_counter() - t0
            results[name].append(sum(s.new_tokens for s in samples) / dt)
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
