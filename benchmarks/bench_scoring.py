"""Likelihood-route scoring throughput, side by side: our scorer vs lm-evaluation-harness vs a naive loop.

The same requests — probes of the V-PRISM bank × their 3 stance statements, chat-formatted, tokenized once
by :func:`valuedrift.stance.likelihood.build_requests` — are scored on one model by

- ``ours``     :func:`score_requests` (auto: prefix trees + shared-prefix KV cache + LM head at scored positions)
- ``padded``   :func:`score_requests` with ``method="padded"`` (our fallback path, for the ablation)
- ``lm-eval``  lm-evaluation-harness ``HFLM._loglikelihood_tokens`` (the token-level engine its
  ``loglikelihood`` delegates to; the string API would move the chat template's trailing newline into the
  continuation and so score a different, one token longer, continuation)
- ``naive``    :func:`score_naive`: one forward per request, full logits

in interleaved rounds (the scorer order rotates each round, so load from other processes hits all
alike). Each round also measures the machine's fp32 matmul FLOP/s. Printed: requests/s (median over
rounds), the per-round throughput ratios (median), executed GFLOP per request and achieved GFLOP/s
against the matmul rate, and the largest disagreement of summed log-likelihoods (must be ≤ --tol).

FLOPs executed by a forward over T tokens with the LM head at H positions:

    2·N_lin·T + 2·V·d·H + 4·n_layers·d_attn·A

N_lin = parameters of the decoder's linear layers, V·d = LM head, A = query–key pairs the attention
kernel computes (padding and masked pairs included: it is what the hardware executes).

Run: ``.venv/bin/python benchmarks/bench_scoring.py`` (needs ``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# as the valuedrift CLI does: idle OpenMP threads sleep rather than spin (must precede the torch import)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from valuedrift.data.probes import load_probe_bank  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402
from valuedrift.stance.likelihood import build_requests  # noqa: E402
from valuedrift.stance.request_scoring import (  # noqa: E402
    Request,
    auto_path,
    score_naive,
    score_requests,
    tree_workload,
)

SCORERS = ("ours", "padded", "lm-eval", "naive")
log = logging.getLogger("bench_scoring")


# -- machine ------------------------------------------------------------------------------------------


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
    """Median fp32 FLOP/s of an n×n @ n×n matmul (2n³ FLOPs) with torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def machine_notes() -> dict[str, Any]:
    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__,
        "python": platform.python_version(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


# -- FLOP accounting ----------------------------------------------------------------------------------


def model_dims(model: Any) -> dict[str, int]:
    head = model.get_output_embeddings()
    n_lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    cfg = model.config
    d_attn = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return {"n_lin": n_lin, "head": head.weight.numel(), "layers": cfg.num_hidden_layers, "d_attn": d_attn}


def flops(dims: dict[str, int], tokens: int, head_positions: int, attention_pairs: int) -> float:
    return 2.0 * dims["n_lin"] * tokens + 2.0 * dims["head"] * head_positions + 4.0 * dims["layers"] * dims["d_attn"] * attention_pairs


def _padded_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    ordered = sorted(lengths, reverse=True)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def workload(name: str, requests: Sequence[Request], batch_size: int, lm_eval_batch: int) -> dict[str, int]:
    """Tokens fed, LM-head positions and attention pairs each scorer executes on ``requests``."""
    if name == "ours":
        w = tree_workload(requests, batch_size)
        return {"tokens": w["prefix"] + w["padded_tokens"], "head": w["head_positions"] + 1, "pairs": w["attention_pairs"] + w["prefix"] ** 2}
    if name == "naive":
        lens = [len(r.context) + len(r.continuation) for r in requests]
        return {"tokens": sum(lens), "head": sum(lens), "pairs": sum(n * n for n in lens)}
    if name == "padded":
        out = {"tokens": 0, "head": 0, "pairs": 0}
        order = sorted(requests, key=lambda r: -(len(r.context) + len(r.continuation)))
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            width = max(len(r.context) + len(r.continuation) - 1 for r in batch)
            first = min(len(r.context) for r in batch) - 1
            out["tokens"] += len(batch) * width
            out["head"] += len(batch) * (width - first)
            out["pairs"] += len(batch) * width * width
        return out
    # lm-eval: length-sorted, right-padded, full logits at every position
    out = {"tokens": 0, "head": 0, "pairs": 0}
    for batch in _padded_batches([len(r.context) + len(r.continuation) - 1 for r in requests], lm_eval_batch):
        out["tokens"] += len(batch) * batch[0]
        out["head"] += len(batch) * batch[0]
        out["pairs"] += len(batch) * batch[0] ** 2
    return out


# -- scorers ------------------------------------------------------------------------------------------


def make_scorers(names: Sequence[str], model: Any, tokenizer: Any, batch_size: int, lm_eval_batch: int) -> dict[str, Callable[[list[Request]], np.ndarray]]:
    """name -> f(requests) returning the summed continuation log-likelihood per request."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: dict[str, Callable[[list[Request]], np.ndarray]] = {}
    for name in names:
        if name == "ours":
            out[name] = lambda reqs: score_requests(model, reqs, batch_size, pad)[:, 0]
        elif name == "padded":
            out[name] = lambda reqs: score_requests(model, reqs, batch_size, pad, method="padded")[:, 0]
        elif name == "naive":
            out[name] = lambda reqs: score_naive(model, reqs)[:, 0]
        elif name == "lm-eval":
            try:
                from lm_eval.models.huggingface import HFLM
            except ImportError as e:
                raise SystemExit('lm-eval is not installed: pip install -e ".[bench]"') from e
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=lm_eval_batch)

            def run_lm_eval(reqs: list[Request], lm: Any = lm) -> np.ndarray:
                items = [(("", ""), list(r.context), list(r.continuation)) for r in reqs]
                return np.array([lp for lp, _ in lm._loglikelihood_tokens(items, disable_tqdm=True)])

            out[name] = run_lm_eval
    return out


def sample_requests(tokenizer: Any, data: Path, n_probes: int, seed: int) -> tuple[list[Any], list[Request]]:
    bank = load_probe_bank(data)
    probes = bank if n_probes <= 0 or n_probes >= len(bank) else sorted(random.Random(seed).sample(bank, n_probes), key=lambda p: p.id)
    return probes, build_requests(tokenizer, probes)


# -- main ---------------------------------------------------------------------------------------------


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tokenizer = load_tokenizer(a.model)
    model = load_model(a.model, dtype=a.dtype, device=a.device).eval()
    probes, requests = sample_requests(tokenizer, Path(a.data), a.probes, a.seed)
    dims = model_dims(model)
    scorers = make_scorers(a.scorers, model, tokenizer, a.batch_size, a.lm_eval_batch_size)
    lens = [len(r.context) + len(r.continuation) for r in requests]
    print(f"{len(probes)} probes, {len(requests)} requests, {np.mean(lens):.1f} tokens/request on average; "
          f"model {a.model} ({a.dtype}, {next(model.parameters()).device}); torch threads {torch.get_num_threads()}")
    warm = requests[: 3 * min(2, len(probes))]
    for f in scorers.values():  # warm-up, and the one-time tree-path check of method="auto"
        f(warm)
    path = auto_path(model)
    print(f"our scorer's path on this model: {path}")
    work = {n: workload("padded" if n == "ours" and path == "padded" else n, requests, a.batch_size, a.lm_eval_batch_size) for n in scorers}
    load_start = os.getloadavg()
    seconds: dict[str, list[float]] = {n: [] for n in scorers}
    results: dict[str, np.ndarray] = {}
    matmul: list[float] = []
    names = list(scorers)
    for rnd in range(a.repeats):
        matmul.append(matmul_flops())
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            t = time.perf_counter()
            scores = scorers[name](requests)
            seconds[name].append(time.perf_counter() - t)
            results.setdefault(name, scores)
            print(f"  round {rnd + 1}/{a.repeats} {name:8s} {len(requests) / seconds[name][-1]:7.1f} req/s", flush=True)
    ref_name = "naive" if "naive" in results else names[0]
    ref = results[ref_name]
    disagreement = {n: float(np.max(np.abs(results[n] - ref))) for n in names}
    base = "lm-eval" if "lm-eval" in names else names[-1]
    peak = statistics.median(matmul)
    rows = {}
    for n in names:
        rps = [len(requests) / s for s in seconds[n]]
        fl = flops(dims, work[n]["tokens"], work[n]["head"], work[n]["pairs"])
        rows[n] = {
            "requests_per_s": statistics.median(rps),
            "ratio_vs": {m: statistics.median(seconds[m][i] / seconds[n][i] for i in range(a.repeats)) for m in names if m != n},
            "seconds": seconds[n],
            "gflop_per_request": fl / len(requests) / 1e9,
            "achieved_gflop_s": statistics.median(fl / s for s in seconds[n]) / 1e9,
            "workload": work[n],
            f"max_abs_diff_vs_{ref_name}": disagreement[n],
        }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine_notes(), "args": vars(a),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "ours_path": path, "n_probes": len(probes), "n_requests": len(requests), "mean_tokens_per_request": float(np.mean(lens)),
        "matmul_gflop_s": peak / 1e9, "matmul_gflop_s_rounds": [m / 1e9 for m in matmul], "scorers": rows,
        "agree": all(d <= a.tol for d in disagreement.values()), "tol": a.tol, "reference": ref_name,
    }
    print()
    print(f"fp32 matmul: {peak / 1e9:.0f} GFLOP/s (median of {a.repeats} rounds); load average {load_start[0]:.1f} → {report['loadavg_end'][0]:.1f}")
    print(f"{'scorer':8s} {'req/s':>8s} {'× ' + base:>10s} {'GFLOP/req':>10s} {'GFLOP/s':>8s} {'% matmul':>8s} {'max|Δll|':>9s}")
    for n, r in rows.items():
        ratio = 1.0 if n == base else r["ratio_vs"][base]
        print(f"{n:8s} {r['requests_per_s']:8.1f} {ratio:10.2f} {r['gflop_per_request']:10.2f} {r['achieved_gflop_s']:8.1f} "
              f"{100 * r['achieved_gflop_s'] * 1e9 / peak:7.0f}% {disagreement[n]:9.1e}")
    print(f"log-likelihoods agree to {a.tol:g} (vs {ref_name}): {report['agree']}")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_scoring", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/base", help="model folder or hub id (default: the bundled SmolLM2)")
    ap.add_argument("--data", default="data", help="data folder with the probe bank")
    ap.add_argument("--probes", type=int, default=60, help="probes to score (× 3 statements); 0 = the whole bank")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (≥ 3 for a median)")
    ap.add_argument("--batch-size", type=int, default=16, help="our scorer: requests per forward (eval.batch_size)")
    ap.add_argument("--lm-eval-batch-size", type=int, default=16, help="lm-eval HFLM batch size")
    ap.add_argument("--scorers", default=",".join(SCORERS), help=f"comma-separated subset of {','.join(SCORERS)}")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tol", type=float, default=1e-3, help="max |Δ summed log-likelihood| between scorers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    a.scorers = [s.strip() for s in a.scorers.split(",") if s.strip()]
    bad = [s for s in a.scorers if s not in SCORERS]
    if bad or not a.scorers:
        ap.error(f"--scorers: unknown {bad}; choose from {', '.join(SCORERS)}")
    if a.repeats < 1 or a.batch_size < 1 or a.lm_eval_batch_size < 1:
        ap.error("--repeats, --batch-size and --lm-eval-batch-size must be ≥ 1")
    if not Path(a.model).exists() and "/" not in a.model:
        ap.error(f"--model {a.model!r}: no such folder (run `dvc repro prepare_model` for models/base)")
    logging.basicConfig(level=logging.WARNING)
    report = run(a)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
