"""``po`` stage: preference optimisation from the SFT checkpoint, one algorithm × one preference set.

Reads ``processed/preferences/<set>.jsonl`` and the SFT model (``runs/sft/<corpus>/final``); writes
``runs/po/<algorithm>-<set>/`` with per-checkpoint stance tables, ``trajectory.json`` and ``final/``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from valuedrift.config import Params, load_params
from valuedrift.data.schemas import read_records
from valuedrift.models import load_model, load_tokenizer
from valuedrift.train.algorithms import BuildContext, DataKind, get_algorithm
from valuedrift.train.common import (
    FINAL,
    file_digest,
    fingerprint,
    flat_params,
    last_checkpoint,
    make_traced_run,
    prepare_run_dir,
    run_tags,
    training_kwargs,
)

log = logging.getLogger(__name__)


def preference_path(processed: Path, name: str) -> Path:
    return processed / "preferences" / f"{name}.jsonl"


def to_unpaired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired → unpaired (KTO): each pair gives (prompt, chosen, True) and (prompt, rejected, False)."""
    out = []
    for r in rows:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return out


def run_po(params: Params, sft_model: Path, processed: Path, out_root: Path, algorithm: str, pref_set: str) -> Path:
    from datasets import Dataset
    from transformers import set_seed

    algo = get_algorithm(algorithm)
    if pref_set not in params.prepare_data.preference_sets:
        raise SystemExit(f"--preference-set {pref_set!r} is not in prepare_data.preference_sets")
    hparams = params.po.algorithm_hparams(algorithm)
    data_file = preference_path(processed, pref_set)
    rows = read_records(data_file, lambda obj, path, line: obj)
    run_dir = out_root / f"{algorithm}-{pref_set}"
    fp = fingerprint(flat_params(params, "po"), algorithm, hparams, file_digest(data_file), str(sft_model))
    resumable = prepare_run_dir(run_dir, fp)
    set_seed(params.seed)

    tokenizer = load_tokenizer(sft_model, params.model.trust_remote_code)
    traced = make_traced_run(params, run_dir, tokenizer, params.po.eval_every)
    keep = ("prompt", "chosen", "rejected")
    paired = [{k: r[k] for k in keep} for r in rows]
    dataset = Dataset.from_list(paired if algo.data is DataKind.PAIRED else to_unpaired(paired))
    resume = last_checkpoint(run_dir) if resumable else None
    tags = run_tags("po", algorithm, preference_set=pref_set, sft_model=str(sft_model))
    with traced.tracker.run(f"{algorithm}-{pref_set}", tags, {**flat_params(params, "po"), **{f"hp.{k}": v for k, v in hparams.items()}}):
        import pandas as pd

        traced.tracker.log_input(
            pd.DataFrame([{**{k: r[k][0]["content"] for k in keep}, "chosen_stance": r.get("chosen_stance"),
                           "rejected_stance": r.get("rejected_stance")} for r in rows]),
            name=f"preferences/{pref_set}", source=str(data_file),
        )
        model = load_model(sft_model, params.model.dtype, params.model.device, params.model.trust_remote_code)
        ctx = BuildContext(
            model=model, tokenizer=tokenizer, dataset=dataset,
            train_kwargs=training_kwargs(params.po, params, run_dir), hparams=hparams,
            max_length=params.po.max_length, callbacks=[traced.callback], run_dir=run_dir, params=params,
        )
        trainer = algo.build(ctx)
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(str(run_dir / FINAL))
        tokenizer.save_pretrained(str(run_dir / FINAL))
        traced.tracker.log_metrics({"time/eval_seconds": traced.tracer.eval_seconds}, step=trainer.state.global_step)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift po", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--algorithm", required=True)
    ap.add_argument("--preference-set", required=True)
    ap.add_argument("--sft-model", default=None, help="default: runs/sft/<sft.corpus>/final")
    ap.add_argument("--processed", default="processed")
    ap.add_argument("--out", default="runs/po")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    try:
        get_algorithm(a.algorithm)
    except KeyError as e:
        raise SystemExit(f"--algorithm: {e.args[0]}") from None
    sft_model = Path(a.sft_model or f"runs/sft/{params.sft.corpus}/{FINAL}")
    run_po(params, sft_model, Path(a.processed), Path(a.out), a.algorithm, a.preference_set)
