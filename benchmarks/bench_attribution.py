"""Attribution: per-example gradients from one backward per batch against one backward per example.

What :func:`valuedrift.attribution.tracin.example_dots` costs per checkpoint on the real model: the inner
products of every training example's loss gradient (last ``--last-blocks`` blocks + final norm) with 9
readout directions (3 stances × dev/test/all, here random unit vectors: the cost does not depend on them).

- ``batch_size 1``: the path before per-example gradients (one forward per example from the shared
  chat-template prefix's KV cache, one backward each) — the baseline;
- ``batch_size B``: B examples per right-padded forward, one backward, per-example gradients from the
  hooks of :mod:`valuedrift.attribution.per_example` (no shared prefix).

Both run in the same process on the same examples, in alternating rounds whose order rotates; the ratio is
the median of the per-round ratios. Also reported: the largest relative difference of the inner products
against the baseline.

Run (after ``dvc repro prepare_model prepare_data``):
``.venv/bin/python benchmarks/bench_attribution.py [--data processed/sft/neutral_heavy.jsonl] [--examples 64]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from valuedrift.attribution.losses import SFTLoss
from valuedrift.attribution.subset import select_subset
from valuedrift.attribution.tracin import example_dots
from valuedrift.core.io import read_records
from valuedrift.models import load_model, load_tokenizer


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="processed/sft/neutral_heavy.jsonl")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--last-blocks", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/attribution.json")
    args = ap.parse_args(argv)

    tok, model = load_tokenizer(Path(args.model)), load_model(Path(args.model))
    rows = read_records(Path(args.data), lambda obj, path, line: obj)[: args.examples]
    params = [p for _, p in select_subset(model, args.last_blocks)]
    dim = sum(p.numel() for p in params)
    directions = torch.nn.functional.normalize(torch.randn(9, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    loss = SFTLoss(tok, rows, args.max_length)
    loss.prepare(model)

    seconds: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    dots: dict[int, np.ndarray] = {}
    for r in range(args.rounds):
        order = args.batch_sizes[r % len(args.batch_sizes):] + args.batch_sizes[: r % len(args.batch_sizes)]
        for b in order:
            t0 = time.perf_counter()
            dots[b] = example_dots(model, loss, params, lambda g: directions @ g, 9, b)
            seconds[b].append(time.perf_counter() - t0)
            print(f"round {r} batch_size {b}: {seconds[b][-1]:.1f} s", flush=True)
    base = args.batch_sizes[0]
    scale = np.abs(dots[base]).max()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": args.model, "data": args.data, "examples": len(rows), "params": dim, "threads": torch.get_num_threads(),
        "rounds": args.rounds, "baseline_batch_size": base,
        "per_example_s": {b: statistics.median(s) / len(rows) for b, s in seconds.items()},
        "speedup_vs_baseline": {b: statistics.median(a / c for a, c in zip(seconds[base], s, strict=True)) for b, s in seconds.items()},
        "max_abs_diff_over_max_abs": {b: float(np.abs(d - dots[base]).max() / scale) for b, d in dots.items()},
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    history = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(history + [result], indent=2) + "\n")


if __name__ == "__main__":
    main()
