"""``sft`` stage: supervised fine-tuning with TRL's SFTTrainer, stances traced at every checkpoint.

Reads ``processed/sft/<corpus>.jsonl`` (prompt/completion conversations; loss on the assistant turn only)
and the prepared base model; writes ``runs/sft/<corpus>/`` with checkpoints, per-checkpoint stance tables,
``trajectory.json`` and the final model in ``final/``. An interrupted run resumes from its last checkpoint.
``sft.corpora`` lists the corpora to train on (dvc.yaml runs one matrix entry per corpus with ``--corpus``;
without ``--corpus`` this command trains them one after another). Under ``accelerate launch`` every rank
trains; rank 0 alone prepares the run directory, scores stances and talks to MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any

from valuedrift.config import Params, load_params, to_dict
from valuedrift.data.schemas import read_records
from valuedrift.models import load_model, load_tokenizer
from valuedrift.train.common import (
    FINAL,
    drop_checkpoints,
    file_digest,
    fingerprint,
    flat_params,
    last_checkpoint,
    make_traced_run,
    per_seed,
    prepare_run_dir,
    run_complete,
    run_tags,
    seed_run_name,
    training_kwargs,
)
from valuedrift.train.processes import is_main_process, main_process_first, world_size

log = logging.getLogger(__name__)


def corpus_path(processed: Path, corpus: str) -> Path:
    return processed / "sft" / f"{corpus}.jsonl"


def run_fingerprint(params: Params, data_file: Path, base_model: Path) -> str:
    """What defines one SFT run: the training keys (not the list of corpora), the corpus file, the base model."""
    sft = {k: v for k, v in to_dict(params.sft).items() if k != "corpora"}
    return fingerprint(flat_params(params), sft, file_digest(data_file), str(base_model))


def run_sft(
    params: Params,
    base_model: Path,
    processed: Path,
    out_root: Path,
    corpus: str | None = None,
    callbacks: list[Any] | None = None,
) -> Path:
    """Train, trace and save on ``corpus`` (default: ``po.start_from``) with seed ``params.seed``; returns
    the run directory (``out_root/<corpus>``, or ``out_root/<corpus>/seeds/<seed>`` for a further seed).

    ``callbacks`` are extra ``TrainerCallback`` objects (e.g. an Optuna pruning hook).
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    corpus = corpus or params.po.start_from
    if corpus not in params.prepare_data.corpora:
        raise SystemExit(f"--corpus {corpus!r} is not in prepare_data.corpora ({', '.join(params.prepare_data.corpora)})")
    data_file = corpus_path(processed, corpus)
    rows = read_records(data_file, lambda obj, path, line: obj)
    run_dir = out_root / seed_run_name(corpus, params.seed, params)
    train_kwargs = training_kwargs(params.sft, params, run_dir)
    with main_process_first(train_kwargs["use_cpu"]):
        resumable = prepare_run_dir(run_dir, run_fingerprint(params, data_file, base_model))
    if resumable and run_complete(run_dir, params.sft.max_steps):
        log.info("%s is complete (same inputs, final model and evaluation on disk): nothing to train", run_dir)
        return run_dir
    set_seed(params.seed)
    is_main = is_main_process()

    tokenizer = load_tokenizer(base_model, params.model.trust_remote_code)
    traced = make_traced_run(params, run_dir, tokenizer, params.sft.eval_every)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = SFTConfig(**train_kwargs, max_length=params.sft.max_length, packing=False)
    resume = last_checkpoint(run_dir) if resumable else None
    tags = run_tags("sft", corpus=corpus, seed=str(params.seed), world_size=str(world_size()))
    tracking = traced.tracker.run(f"sft-{corpus}", tags, flat_params(params, "sft")) if is_main else contextlib.nullcontext()
    with tracking:
        if is_main:
            traced.tracker.log_input(_frame(rows), name=f"sft/{corpus}", source=str(data_file))
        model = load_model(base_model, params.model.dtype, params.model.device, params.model.trust_remote_code)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
            callbacks=[traced.callback, *(callbacks or [])],
        )
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(str(run_dir / FINAL))
        if is_main:
            tokenizer.save_pretrained(str(run_dir / FINAL))
            traced.tracker.log_metrics({"time/eval_seconds": traced.tracer.eval_seconds}, step=trainer.state.global_step)
            drop_checkpoints(run_dir, trainer.state.log_history)  # only needed to resume; the final model and evaluations stay
    return run_dir


def _frame(rows: list[dict]) -> object:
    import pandas as pd

    return pd.DataFrame(
        {"prompt": [r["prompt"][0]["content"] for r in rows], "completion": [r["completion"][0]["content"] for r in rows],
         "kind": [r.get("kind") for r in rows], "stance": [r.get("stance") for r in rows]}
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift sft", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--corpus", default=None, help="one corpus of sft.corpora (default: each of them in turn)")
    ap.add_argument("--base-model", default="models/base")
    ap.add_argument("--processed", default="processed")
    ap.add_argument("--out", default="runs/sft")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    if a.corpus is not None and a.corpus not in params.sft.corpora:
        raise SystemExit(f"--corpus {a.corpus!r} is not in sft.corpora ({', '.join(params.sft.corpora)})")
    for corpus in [a.corpus] if a.corpus else params.sft.corpora:
        for p in per_seed(params):  # `seeds` repeats the run; the first seed's run is the plain folder
            run_sft(p, Path(a.base_model), Path(a.processed), Path(a.out), corpus)
