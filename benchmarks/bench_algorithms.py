"""Seconds per training step of SFT and of every registered preference algorithm on the bundled model.

Each trainer is built exactly as the pipeline builds it (``training_kwargs`` + the registry's builder with
the hparams of params.yaml), on batch 4 (``--batch-size``) × 128 tokens (``--max-length``): the texts are
lengthened so every sequence is truncated at the limit. No stance tracing, no checkpoints: only the
optimiser steps are timed (a callback takes the wall time from ``on_step_begin`` to ``on_step_end``);
``--warmup`` steps are dropped, then the median of ``--steps`` steps is reported. For ``rm_rloo`` /
``rm_grpo`` the reward-model phase (RewardTrainer) and the RL phase (``num_generations`` completions of
``max_completion_length`` tokens per step) are timed separately.

TRL's configs turn gradient checkpointing on by default; ``--gradient-checkpointing off`` measures
without it (``both``: each algorithm twice). ``--mixed-precision`` likewise: ``params`` (the sections' own
``mixed_precision``), ``none`` (float32), ``bf16`` (bf16 autocast of the float32 weights), ``both`` (each
algorithm in float32, then in bf16, back to back).

Run (the project venv, 2 threads):

    .venv/bin/python benchmarks/bench_algorithms.py [--algorithms sft dpo …] [--steps 3]

Writes ``benchmarks/results/bench_algorithms.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# as the valuedrift CLI does: idle OpenMP threads sleep rather than spin (must precede the torch import)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from valuedrift.algorithms.base import BuildContext, DataKind  # noqa: E402
from valuedrift.algorithms.registry import ALGORITHMS, algorithm_hparams  # noqa: E402
from valuedrift.config.load import load_params  # noqa: E402
from valuedrift.core.io import read_records  # noqa: E402
from valuedrift.core.rundir import RunDir  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402
from valuedrift.train.po import PAIR_KEYS, to_unpaired  # noqa: E402
from valuedrift.train.scaffold import training_kwargs  # noqa: E402

log = logging.getLogger("bench_algorithms")
ROOT = Path(__file__).resolve().parents[1]


class StepTimer(TrainerCallback):
    """Wall seconds and process CPU seconds (all threads) of every optimiser step.

    On a shared machine wall time grows with the load; CPU seconds much less, and CPU s / threads
    estimates the wall time of an idle machine.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._t0)
        self.cpu_seconds.append(time.process_time() - self._c0)


def lengthen(text: str, tokenizer: Any, tokens: int) -> str:
    """Repeat ``text`` until it has at least ``tokens`` tokens (truncation then cuts at the limit)."""
    out = text
    while len(tokenizer(out, add_special_tokens=False)["input_ids"]) < tokens:
        out = f"{out} {text}"
    return out


def load_rows(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.exists():
        raise SystemExit(f"{path} not found: run `valuedrift prepare-data` / `valuedrift preferences` first ({what})")
    return read_records(path, lambda obj, p, line: obj)


def summary(timer: StepTimer, warmup: int) -> dict[str, Any]:
    kept = timer.seconds[warmup:] or timer.seconds
    cpu = timer.cpu_seconds[warmup:] or timer.cpu_seconds
    return {"s_per_step": statistics.median(kept), "cpu_s_per_step": statistics.median(cpu), "steps_timed": len(kept),
            "all_steps": [round(s, 3) for s in timer.seconds]}


def bench_one(name: str, a: argparse.Namespace, params: Any, tokenizer: Any, data: dict[str, list[dict]], gc: bool,
              precision: str = "params") -> dict[str, Any]:
    from datasets import Dataset

    cfg = params.sft if name == "sft" else params.po
    cfg.max_steps, cfg.batch_size, cfg.grad_accum, cfg.max_length = a.warmup + a.steps, a.batch_size, 1, a.max_length
    cfg.eval_every = 10_000
    if precision != "params":
        cfg.mixed_precision = None if precision == "none" else precision
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {**training_kwargs(cfg, params.seed, params.model.dtype, "cpu", RunDir(Path(tmp)), cfg.max_steps), "save_strategy": "no", "gradient_checkpointing": gc,
                  "disable_tqdm": True, "logging_steps": 1}
        model = load_model(a.model, params.model.dtype, "cpu")
        timer = StepTimer()
        result: dict[str, Any] = {"algorithm": name, "gradient_checkpointing": gc, "mixed_precision": cfg.mixed_precision}
        if name == "sft":
            from trl import SFTConfig, SFTTrainer

            trainer = SFTTrainer(model=model, args=SFTConfig(**kwargs, max_length=a.max_length, packing=False),
                                 train_dataset=Dataset.from_list(data["sft"]), processing_class=tokenizer, callbacks=[timer])
        else:
            algo = ALGORITHMS[name]
            hparams = algorithm_hparams(params.po.hparams, name)
            rows = data["pairs"] if algo.data is DataKind.PAIRED else to_unpaired(data["pairs"])
            ctx = BuildContext(model=model, tokenizer=tokenizer, dataset=Dataset.from_list(rows), train_kwargs=kwargs,
                               hparams=hparams, max_length=a.max_length, callbacks=[timer], run_dir=Path(tmp),
                               model_path=Path(a.model))
            if algo.needs_reward_model:
                from valuedrift.algorithms.reward_rl import build_policy_trainer, train_reward_model

                hparams["reward_steps"] = a.warmup + a.steps
                rm_timer = StepTimer()
                reward_path = train_reward_model(ctx, [rm_timer])
                result["reward_model"] = summary(rm_timer, a.warmup)
                trainer = build_policy_trainer(ctx, reward_path, "rloo" if name == "rm_rloo" else "grpo")
                result["rl"] = {k: hparams[k] for k in ("num_generations", "max_completion_length", "kl_coef")}
            else:
                trainer = algo.build(ctx)
        trainer.train()
        result.update(summary(timer, a.warmup))
    log.info("%s (gradient checkpointing %s): %.2f s/step", name, "on" if gc else "off", result["s_per_step"])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--algorithms", nargs="+", default=["sft", *ALGORITHMS], choices=["sft", *ALGORITHMS])
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", choices=("on", "off", "both"), default="on")
    ap.add_argument("--mixed-precision", choices=("params", "none", "bf16", "both"), default="params")
    ap.add_argument("--sft-corpus", default=str(ROOT / "processed" / "sft" / "neutral_heavy.jsonl"))
    ap.add_argument("--pairs", default=str(ROOT / "processed" / "preferences" / "value_gap.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_algorithms.json"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    load_params(a.params)  # fail on bad params before any model loads (each run re-reads a fresh copy)
    tokenizer = load_tokenizer(a.model)
    n = 4 * a.batch_size * (a.warmup + a.steps)
    sft = load_rows(Path(a.sft_corpus), "SFT corpus")[:n]
    pairs = load_rows(Path(a.pairs), "preference pairs")[:n]
    data = {
        "sft": [{"prompt": r["prompt"], "completion": [{"role": "assistant",
                 "content": lengthen(r["completion"][0]["content"], tokenizer, a.max_length)}]} for r in sft],
        "pairs": [{"prompt": r["prompt"], **{k: [{"role": "assistant", "content": lengthen(r[k][0]["content"], tokenizer, a.max_length)}]
                                              for k in PAIR_KEYS[1:]}} for r in pairs],
    }
    modes = {"on": [True], "off": [False], "both": [True, False]}[a.gradient_checkpointing]
    precisions = ["none", "bf16"] if a.mixed_precision == "both" else [a.mixed_precision]
    results = [bench_one(name, a, load_params(a.params), tokenizer, data, gc, mp)
               for name in a.algorithms for gc in modes for mp in precisions]
    meta = {"model": a.model, "batch_size": a.batch_size, "max_length": a.max_length, "threads": a.threads,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "load_average_at_end": os.getloadavg()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\n{a.batch_size} × {a.max_length} tokens, {a.threads} threads, median of {a.steps} steps after {a.warmup} warm-up\n")
    print(f"| algorithm | gradient checkpointing | mixed precision | wall s/step | CPU s/step ÷ {a.threads} | reward-model phase wall / CPU÷{a.threads} |")
    print("|---|---|---|---|---|---|")
    for r in results:
        rm = (f"{r['reward_model']['s_per_step']:.2f} / {r['reward_model']['cpu_s_per_step'] / a.threads:.2f}"
              if "reward_model" in r else "–")
        print(f"| {r['algorithm']} | {'on' if r['gradient_checkpointing'] else 'off'} | {r['mixed_precision'] or 'none'} | {r['s_per_step']:.2f} | "
              f"{r['cpu_s_per_step'] / a.threads:.2f} | {rm} |")
    print(f"\nload average at the end: {meta['load_average_at_end']}")


if __name__ == "__main__":
    main()
