"""Seconds per checkpoint of a judged readout on the trace probes: the quick judged route (``eval.quick``)
against today's paper route (``eval.paper``: K = 5 answers × ≤ 256 tokens, judged by ``eval.paper.judge``).

Both sample with :func:`valuedrift.stance.sampling.generate_samples` and judge with the configured judge;
the quick route runs on all trace probes, the paper route on ``--paper-probes-per-topic`` probes per
(split, topic) (it takes minutes), and its per-probe time is scaled to the trace probes. Rounds alternate
the order; reported: the median seconds of each and the ratio.

Run: ``.venv/bin/python benchmarks/bench_quick_route.py --checkpoint runs/sft/neutral_heavy/final``
(after ``dvc repro train_judge``; the paper route's judge is the bundled SmolLM2 in models/base).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from valuedrift.config.load import load_params  # noqa: E402
from valuedrift.config.schema.evaluation import PaperRouteConfig  # noqa: E402
from valuedrift.data.probes import load_probe_bank, select_probes  # noqa: E402
from valuedrift.stance.evaluation import load_policy, make_judge  # noqa: E402
from valuedrift.stance.paper_route import judge_samples  # noqa: E402
from valuedrift.stance.sampling import generate_samples  # noqa: E402


def timed_route(model, tokenizer, judge, probes, cfg: PaperRouteConfig, seed: int, prompt_format: str) -> tuple[float, int]:
    """Seconds to sample and judge ``probes`` with ``cfg``; and the answer tokens generated."""
    t0 = time.perf_counter()
    drawn = generate_samples(model, tokenizer, probes, k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=seed,
                             prompt_format=prompt_format)
    judge_samples(judge, probes, drawn)
    return time.perf_counter() - t0, sum(s.new_tokens for s in drawn)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_quick_route", description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--paper-probes-per-topic", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/quick_route.json")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    ev = params.eval
    bank = load_probe_bank(Path(a.data))
    trace = select_probes(bank, ev.quick.probes_per_topic, ev.splits, params.probe_seed)
    paper_probes = select_probes(bank, a.paper_probes_per_topic, ev.splits, params.probe_seed)
    tokenizer, model = load_policy(params.model, a.checkpoint)
    quick_judge = make_judge(ev.judges, params.model, ev.quick.judge)
    paper_judge = make_judge(ev.judges, params.model, ev.paper.judge)
    rows: dict[str, list[float]] = {"quick": [], "paper": []}
    tokens: dict[str, int] = {}
    for r in range(a.rounds):
        order = ["quick", "paper"] if r % 2 == 0 else ["paper", "quick"]
        for name in order:
            if name == "quick":
                s, tokens[name] = timed_route(model, tokenizer, quick_judge, trace, ev.quick, params.seed, ev.prompt_format)
            else:
                s, tokens[name] = timed_route(model, tokenizer, paper_judge, paper_probes, ev.paper, params.seed, ev.prompt_format)
                s *= len(trace) / len(paper_probes)  # per-probe time scaled to the trace probes
            rows[name].append(s)
            print(f"round {r}: {name} {s:.1f} s per checkpoint ({len(trace)} trace probes)", flush=True)
    quick, paper = statistics.median(rows["quick"]), statistics.median(rows["paper"])
    result = {"checkpoint": a.checkpoint, "trace_probes": len(trace), "paper_probes_timed": len(paper_probes),
              "quick": {"seconds": quick, "k": ev.quick.k, "max_new_tokens": ev.quick.max_new_tokens, "judge": ev.quick.judge,
                        "answer_tokens": tokens["quick"]},
              "paper": {"seconds_scaled": paper, "k": ev.paper.k, "max_new_tokens": ev.paper.max_new_tokens, "judge": ev.paper.judge,
                        "answer_tokens_timed": tokens["paper"]},
              "speedup": paper / quick, "rounds": rows, "cpus": os.cpu_count()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"quick {quick:.1f} s vs paper {paper:.1f} s per checkpoint on {len(trace)} trace probes: {paper / quick:.1f}× faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
