"""Useful training tokens per second of SFT: right-padded batches (TRL's default collator) against
padding-free batches (``SFTConfig(padding_free=True)``: each batch is one flat sequence with per-example
position ids; transformers 5 turns those into a block-diagonal causal mask for SDPA/eager attention, so no
token attends across examples and no FLOP is spent on padding).

Both modes train the bundled model (``models/base``) on the same corpus rows in the same order from the same
weights, ``--steps`` optimiser steps each, in ``--rounds`` interleaved rounds whose order alternates (so a
busy machine slows both alike); each round's ratio is taken and the median reported. Useful tokens = the
non-padding tokens the model reads (the corpus rows' lengths after the chat template and truncation);
the first step's loss of both modes is compared (padding-free must train on the same tokens: equal loss to
1e-4).

    .venv/bin/python benchmarks/bench_training_throughput.py --corpus processed/sft/neutral_heavy.jsonl \\
        --out benchmarks/results/training_throughput.json

``--modes`` adds other variants, each compared with ``padded`` in the same rounds: ``bf16`` (``bf16=True``:
bfloat16 autocast of the fp32 weights, the padded batches otherwise the same; worth it only on CPUs with bf16
matrix instructions, e.g. AVX512-BF16 or AMX) and ``padding_free_bf16`` (both). (The optimizer is transformers' default for torch ≥ 2.8,
``adamw_torch_fused``, in every mode, as in the pipeline.)

``--trainer dpo`` times ``DPOTrainer`` instead (``DPOConfig``, β = 0.1, sigmoid loss, the reference model a frozen
copy): pairs made of consecutive corpus rows (prompt of row i, chosen = its completion, rejected = row i+1's),
useful tokens = prompt + chosen + rejected of each pair, twice for the policy and the reference forward. Only
``bf16`` is compared there: TRL 1.16's ``DPOConfig.padding_free`` is switched off inside ``DPOTrainer``
("temporarily unavailable after a refactor").

    .venv/bin/python benchmarks/bench_training_throughput.py --trainer dpo --modes padded,bf16 --batch-size 4 \
        --out benchmarks/results/training_throughput_dpo.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from valuedrift.core.io import read_records  # noqa: E402
from valuedrift.models import load_model, load_tokenizer  # noqa: E402


class StepClock(TrainerCallback):
    """Wall time and loss of every optimiser step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.losses: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.times.append(time.perf_counter() - self._t)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


# SFTConfig overrides of each mode on top of the padded fp32 baseline. bf16 must be set: TRL's configs default it
# to True (bf16 autocast) where the hardware allows, while the pipeline trains fp32 weights in fp32 (model.dtype:
# float32 → bf16=False, valuedrift.train.scaffold); runs of this script before 2026-12-04 left it at TRL's default.
MODES: dict[str, dict[str, Any]] = {"padded": {"bf16": False}, "padding_free": {"bf16": False, "padding_free": True},
                                    "bf16": {"bf16": True}, "padding_free_bf16": {"bf16": True, "padding_free": True}}


def run(mode: str, model_dir: Path, rows: list[dict], steps: int, batch: int, max_length: int, trainer_kind: str = "sft") -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, "float32", "cpu")
    clock = StepClock()
    common = dict(max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4, lr_scheduler_type="constant",
                  logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, data_seed=0,
                  dataloader_num_workers=0, gradient_checkpointing=False, **MODES[mode])
    with tempfile.TemporaryDirectory() as out:
        if trainer_kind == "dpo":
            used = rows[: steps * batch + 1]
            ds = Dataset.from_list([{"prompt": a["prompt"], "chosen": a["completion"], "rejected": b["completion"]}
                                    for a, b in zip(used, used[1:], strict=False)])
            cfg = DPOConfig(output_dir=out, max_length=max_length, beta=0.1, **common)
            trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[clock])
            d = trainer.train_dataset
            # prompt + chosen and prompt + rejected: the sequences the policy and the reference read
            lengths = [2 * len(p) + len(c) + len(r) for p, c, r in zip(d["prompt_ids"], d["chosen_ids"], d["rejected_ids"], strict=True)]
            longest = max(len(p) + max(len(c), len(r)) for p, c, r in zip(d["prompt_ids"], d["chosen_ids"], d["rejected_ids"], strict=True))
        else:
            ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows[: steps * batch]])
            # padding-free does not truncate (TRL): the rows must fit max_length, checked below
            cfg = SFTConfig(output_dir=out, packing=False, max_length=None if MODES[mode].get("padding_free") else max_length, **common)
            trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[clock])
            lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
            longest = max(lengths)
        if longest > max_length:
            raise SystemExit(f"a row has {longest} tokens > --max-length {max_length}: the modes would train on different tokens")
        trainer.train()
    timed = clock.times[1:]  # the first step warms up allocators and kernels
    useful = sum(lengths[batch:])  # tokens of the timed steps (the data order is sequential: one epoch prefix)
    return {"mode": mode, "s_per_step": statistics.median(timed), "seconds": sum(timed), "useful_tokens": useful,
            "useful_tokens_per_s": useful / sum(timed), "first_loss": clock.losses[0] if clock.losses else None,
            "padded_tokens_per_step": batch * statistics.mean(
                max(lengths[i : i + batch]) for i in range(batch, len(lengths), batch)) if trainer_kind == "sft" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--corpus", default="processed/sft/neutral_heavy.jsonl")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="padded,padding_free", help=f"comma-separated, padded first; of {', '.join(MODES)}")
    ap.add_argument("--trainer", choices=["sft", "dpo"], default="sft", help="SFTTrainer on the rows, or DPOTrainer on pairs of them")
    ap.add_argument("--out", default="benchmarks/results/training_throughput.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = read_records(Path(a.corpus), lambda obj, path, line: obj)
    modes = a.modes.split(",")
    if modes[0] != "padded" or len(modes) < 2 or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes {a.modes!r}: padded first, then one or more of {', '.join(m for m in MODES if m != 'padded')}")
    if a.trainer == "dpo" and any(MODES[m].get("padding_free") for m in modes):
        raise SystemExit("--trainer dpo: TRL 1.16's DPOTrainer switches padding_free off; compare padded,bf16")
    results, ratios = [], {m: [] for m in modes[1:]}
    for k in range(a.rounds):
        order = modes if k % 2 == 0 else modes[::-1]
        got = {m: run(m, Path(a.model), rows, a.steps, a.batch_size, a.max_length, a.trainer) for m in order}
        results += [{"round": k, **got[m]} for m in order]
        for m in ratios:
            ratios[m].append(got[m]["useful_tokens_per_s"] / got["padded"]["useful_tokens_per_s"])
        print(f"round {k}: " + ", ".join(f"{m} {got[m]['useful_tokens_per_s']:.0f} useful tok/s (loss₁ {got[m]['first_loss']})" for m in order)
              + "; ratios " + ", ".join(f"{m} {r[-1]:.2f}" for m, r in ratios.items()), flush=True)
    out = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "trainer": a.trainer, "model": a.model, "corpus": a.corpus,
                    "steps": a.steps, "batch_size": a.batch_size, "max_length": a.max_length, "threads": 2,
                    "cpu": platform.processor() or platform.machine(), "load_average_at_end": list(os.getloadavg())},
           "ratio_over_padded": {m: {"median": statistics.median(r), "rounds": r} for m, r in ratios.items()}, "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    for m, r in ratios.items():
        print(f"{m} / padded useful tokens per second: median {statistics.median(r):.2f} over {len(r)} rounds")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
