"""Supervised fine-tuning with TRL's SFTTrainer, stances traced at every checkpoint.

Reads ``processed/sft/<corpus>.jsonl`` (prompt/completion conversations; loss on the assistant turn only)
and the prepared base model; writes ``runs/sft/<corpus>/`` (:mod:`valuedrift.core.rundir`). The shared
scaffold (:mod:`valuedrift.train.scaffold`) resumes, traces, logs and saves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from valuedrift.adapters import lora_config
from valuedrift.config.schema.params import Params
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import read_records
from valuedrift.core.paths import BASE_EVAL, DATA, corpus_file
from valuedrift.data.frames import corpus_frame
from valuedrift.tracking import dataset_source
from valuedrift.train.scaffold import RunPlan, TracedRun, flat_params, run_inputs, train_traced


def corpus_source(processed: Path, corpus: str) -> dict[str, Any] | None:
    """Where a corpus read from a dataset came from (``processed/sft/summary.json``, ``source``); None for an
    authored corpus or a summary that predates the field."""
    summary = Path(processed) / "sft" / "summary.json"
    if not summary.exists():
        return None
    return (json.loads(summary.read_text()).get("corpora", {}).get(corpus) or {}).get("source")


def check_rows_fit(lengths: list[int], max_length: int, data_file: Path) -> None:
    """Padding-free training reads whole rows: a row longer than ``sft.max_length`` is a config error (before any
    step is trained), naming the longest row and both ways out."""
    over = [n for n in lengths if n > max_length]
    if over:
        raise ConfigError(
            "sft.max_length",
            f"{len(over)} of {len(lengths)} rows of {data_file} are longer than {max_length} tokens (the longest "
            f"{max(over)}) and sft.padding_free does not truncate: set sft.max_length >= {max(over)}, or "
            "sft.padding_free: false to cut rows at max_length",
        )


def run_sft(
    params: Params,
    base_model: Path,
    processed: Path,
    out_root: Path,
    corpus: str | None = None,
    callbacks: list[Any] | None = None,
    data_dir: Path = DATA,
    start_eval: Path | None = BASE_EVAL,
    variant: str | None = None,
) -> Path:
    """Train, trace and save on ``corpus`` (default: ``po.start_from``) with seed ``params.seed``; returns
    the run folder (``out_root/<corpus>``, or ``out_root/<corpus>/seeds/<seed>`` for a further seed).

    ``callbacks`` are extra ``TrainerCallback`` objects (e.g. an Optuna pruning hook); ``data_dir`` holds
    the probe bank the stances are traced on; ``start_eval`` is the start model's evaluation (``trace_base``),
    adopted as step 0 where its settings and probes match (else step 0 is scored here); ``variant`` names a
    retraining of the run on other data (``valuedrift retrain``): the MLflow run ``sft-<corpus>-<variant>``,
    tagged ``counterfactual: <variant>``.
    """
    corpus = corpus or params.po.start_from
    if corpus not in params.prepare_data.corpora:
        raise ConfigError("--corpus", f"{corpus!r} is not in prepare_data.corpora ({', '.join(params.prepare_data.corpora)})")
    data_file = corpus_file(processed, corpus)
    rows = read_records(data_file, lambda obj, path, line: obj)
    cfg = params.sft

    def build(model: Any, tokenizer: Any, kwargs: dict[str, Any], trainer_callbacks: list[Any], traced: TracedRun) -> Any:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
        # padding-free batches are not truncated by TRL (max_length must be None): the rows are checked against it
        args = SFTConfig(**kwargs, max_length=None if cfg.padding_free else cfg.max_length, packing=False,
                         padding_free=cfg.padding_free)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=trainer_callbacks,
                             peft_config=lora_config(cfg.peft))
        if cfg.padding_free:
            check_rows_fit([len(x) for x in trainer.train_dataset["input_ids"]], cfg.max_length, data_file)
        return trainer

    plan = RunPlan(
        kind="sft", name=corpus, run_name=f"sft-{corpus}" + (f"-{variant}" if variant else ""), train=cfg, start_model=Path(base_model), data_file=data_file,
        inputs=run_inputs(params, "sft"),
        build_trainer=build, n_examples=len(rows),
        tags={"corpus": corpus, **({"counterfactual": variant} if variant else {})}, mlflow_params=flat_params(params, "sft"),
        frame=corpus_frame(rows), input_name=f"sft/{corpus}",
        input_source=dataset_source(corpus_source(processed, corpus), str(data_file)),
        before_train=(lambda traced: traced.adopt_start(start_eval)) if start_eval is not None else None,
    )
    return train_traced(params, plan, out_root, callbacks, data_dir).path
