"""GPU cost of a paper profile (profiles/paper_*.yaml) from its grid: optimizer steps, checkpoints, tokens and
FLOPs of every run, and GPU-hours at a sustained FLOP rate you give.

    python benchmarks/estimate_paper_cost.py profiles/paper_llama3_3b.yaml [--tflops 400] [--tokens-per-row N]

An estimate, not a measurement: this machine has no GPU. Counted per run (N = model parameters, T = tokens
per sequence, at most ``max_length``; ``--tokens-per-row`` sets a mean instead):

- training FLOPs per token: forward 2N, backward 4N with full fine-tuning or 2N with LoRA (activation
  gradients only), + 2N when ``gradient_checkpointing`` recomputes the forward;
- SFT: steps · batch · T tokens; DPO: chosen + rejected, + a reference forward (2N) on both; SimPO: no
  reference; ``rm_*``: the reward model's ``reward_steps`` on pairs, then per step ``num_generations``
  sampled completions of ``max_completion_length`` tokens (generation 2N per token), their training, a
  reference and a reward forward;
- stance tracing per checkpoint: trace probes × K answers × ``max_new_tokens`` generated (2N per token).

Dataset sizes are the public ones (Alpaca 52,002 rows; UltraFeedback-binarized train_prefs 61,135 pairs)
unless the profile samples fewer. Steps use the pipeline's own formula (config.schema.training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from valuedrift.config.load import parse_params
from valuedrift.config.schema.training import optimizer_steps
from valuedrift.core import yaml12
from valuedrift.stages.profile import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"meta-llama/Llama-3.2-3B": 3.21e9, "Qwen/Qwen3-4B-Base": 4.02e9}  # model cards
FULL_SIZE = {"alpaca": 52_002, "ultrafeedback": 61_135}
TRACE_GROUPS = 24  # V-PRISM topics × splits the trace probes are drawn from


def rows(cfg) -> int:  # noqa: ANN001 - a corpus or a preference set
    src = cfg.source
    if src is None:
        return cfg.pairs if hasattr(cfg, "pairs") else cfg.rows
    return src.sample or src.limit or FULL_SIZE[src.kind]


def per_token(train, forward_passes: float = 0) -> float:  # noqa: ANN001
    """Training FLOPs per token in units of N (module docstring) + ``forward_passes`` extra forwards."""
    return 2 + (2 if train.peft else 4) + (2 if train.gradient_checkpointing else 0) + 2 * forward_passes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--tflops", type=float, default=400.0, help="sustained training FLOP rate per GPU (default 400: "
                    "≈ 40%% of an H100's dense bf16 peak; an assumption)")
    ap.add_argument("--tokens-per-row", type=int, default=0, help="mean tokens per sequence (default: max_length, a bound)")
    a = ap.parse_args()
    base = yaml12.load((ROOT / "params.yaml").read_text())
    p = parse_params(apply_overrides(base, yaml12.load(Path(a.profile).read_text())))
    n = PARAMS[p.model.name]
    seeds = len(p.seeds)
    total, lines = 0.0, []

    def run(label: str, flops: float, steps: int, every: int) -> None:
        nonlocal total
        checkpoints = steps // every + 2
        trace = checkpoints * p.eval.trace_probes_per_topic * TRACE_GROUPS * p.eval.quick.k * p.eval.quick.max_new_tokens * 2 * n
        total += seeds * (flops + trace)
        lines.append(f"{label:<34} {steps:>6} steps {checkpoints:>4} checkpoints {seeds * (flops + trace) / 3.6e15 / a.tflops:>8.1f} GPU-h")

    s = p.sft
    for c in s.corpora:
        t = a.tokens_per_row or s.max_length
        steps = s.max_steps or optimizer_steps(rows(p.prepare_data.corpora[c]), s.batch_size, s.grad_accum, s.num_train_epochs)
        run(f"sft {c}", steps * s.batch_size * s.grad_accum * t * per_token(s) * n, steps, s.eval_interval(steps))
    po = p.po
    for algo in po.algorithms:
        for name in po.preference_sets:
            t = a.tokens_per_row or po.max_length
            pairs = rows(p.prepare_data.preference_sets[name])
            steps = po.max_steps or optimizer_steps(pairs, po.batch_size, po.grad_accum, po.num_train_epochs)
            seqs = steps * po.batch_size * po.grad_accum
            if algo.startswith("rm_"):
                h = {**po.hparams.get(algo, {})}
                g, c_len = h.get("num_generations", 4), h.get("max_completion_length", 32)
                reward = h.get("reward_steps", 16) * po.batch_size * 2 * t * 6 * n
                flops = reward + seqs * g * c_len * (2 + per_token(po, forward_passes=2)) * n
            else:
                ref = 1 if algo in ("dpo", "kto") else 0
                flops = seqs * 2 * t * per_token(po, forward_passes=ref) * n
            run(f"po {algo}-{name}", flops, steps, po.eval_interval(steps))
    print(f"{p.model.name}: N = {n:.2e} parameters, {seeds} seeds, at {a.tflops:g} TFLOP/s sustained (assumed)")
    print("\n".join(lines))
    print(f"{'total':<34} {total / 3.6e15 / a.tflops:>37.1f} GPU-h  ({total:.2e} FLOPs)")
    if not a.tokens_per_row:
        print("tokens per sequence = max_length (an upper bound; real rows are shorter: --tokens-per-row)")


if __name__ == "__main__":
    main()
