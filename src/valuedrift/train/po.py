"""``po`` stage: preference optimisation from the SFT checkpoint, one algorithm × one preference set.

Reads ``processed/preferences/<set>.jsonl`` and the SFT model (``runs/sft/<po.start_from>/final``); writes
``runs/po/<algorithm>-<set>/`` with per-checkpoint stance tables, ``trajectory.json`` and ``final/``.
The algorithm comes from the registry (:mod:`valuedrift.train.algorithms`); its declared needs decide the
data shape (paired, or unpaired for KTO) and are recorded as MLflow tags. An interrupted run resumes
from its last checkpoint. Under ``accelerate launch`` every rank trains; rank 0 alone prepares the run
directory, scores stances and talks to MLflow.
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
from valuedrift.stages.preferences import log_preference_set
from valuedrift.train.algorithms import BuildContext, DataKind, get_algorithm
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

PAIR_KEYS = ("prompt", "chosen", "rejected")
# po keys that select *which* runs exist; they do not change what one run computes
SELECTION_KEYS = ("algorithms", "preference_sets", "hparams")


def preference_path(processed: Path, name: str) -> Path:
    return processed / "preferences" / f"{name}.jsonl"


def sft_final(params: Params, runs: Path = Path("runs/sft")) -> Path:
    """The SFT checkpoint a preference run of seed ``params.seed`` starts from: the same seed's
    ``runs/sft/<po.start_from>[/seeds/<seed>]/final``."""
    return runs / seed_run_name(params.po.start_from, params.seed, params) / FINAL


def to_unpaired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired → unpaired (KTO): each pair gives (prompt, chosen, True) and (prompt, rejected, False)."""
    out = []
    for r in rows:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return out


def run_fingerprint(params: Params, algorithm: str, hparams: dict[str, Any], data_file: Path, sft_model: Path) -> str:
    """What defines one po run: shared training keys, this algorithm's hparams, the data and the start model.

    Adding another algorithm or preference set to the matrix does not restart the runs that exist.
    """
    po = {k: v for k, v in to_dict(params.po).items() if k not in SELECTION_KEYS}
    return fingerprint(flat_params(params), po, algorithm, hparams, file_digest(data_file), str(sft_model))


def run_po(
    params: Params,
    sft_model: Path,
    processed: Path,
    out_root: Path,
    algorithm: str,
    pref_set: str,
    callbacks: list[Any] | None = None,
) -> Path:
    """Train, trace and save one (algorithm, preference set) run; returns its directory.

    ``callbacks`` are extra ``TrainerCallback`` objects (e.g. an Optuna pruning hook).
    """
    from datasets import Dataset
    from transformers import set_seed

    algo = get_algorithm(algorithm)
    if pref_set not in params.prepare_data.preference_sets:
        raise SystemExit(
            f"--preference-set {pref_set!r} is not in prepare_data.preference_sets "
            f"({', '.join(params.prepare_data.preference_sets)})"
        )
    if not (Path(sft_model) / "config.json").exists():
        raise SystemExit(f"{sft_model}: no SFT checkpoint there (config.json missing); run the sft stage first")
    hparams = params.po.algorithm_hparams(algorithm)
    if algo.check is not None:  # cross-checks with po.* (also run by check-params for po.algorithms)
        algo.check(hparams, params.po, f"po.hparams.{algorithm}")
    data_file = preference_path(processed, pref_set)
    rows = read_records(data_file, lambda obj, path, line: obj)
    run_dir = out_root / seed_run_name(f"{algorithm}-{pref_set}", params.seed, params)
    train_kwargs = training_kwargs(params.po, params, run_dir)
    with main_process_first(train_kwargs["use_cpu"]):
        resumable = prepare_run_dir(run_dir, run_fingerprint(params, algorithm, hparams, data_file, sft_model))
    if resumable and run_complete(run_dir, params.po.max_steps):
        log.info("%s is complete (same inputs, final model and evaluation on disk): nothing to train", run_dir)
        return run_dir
    set_seed(params.seed)
    is_main = is_main_process()

    tokenizer = load_tokenizer(sft_model, params.model.trust_remote_code)
    traced = make_traced_run(params, run_dir, tokenizer, params.po.eval_every)
    paired = [{k: r[k] for k in PAIR_KEYS} for r in rows]
    dataset = Dataset.from_list(paired if algo.data is DataKind.PAIRED else to_unpaired(paired))
    resume = last_checkpoint(run_dir) if resumable else None
    tags = run_tags(
        "po", algorithm, preference_set=pref_set, sft_model=str(sft_model), world_size=str(world_size()),
        seed=str(params.seed),
        **{f"needs.{k}": str(v) for k, v in algo.needs().items()},
    )
    mlflow_params = {**flat_params(params, "po"), **{f"hp.{k}": v for k, v in hparams.items()}}
    tracking = traced.tracker.run(f"{algorithm}-{pref_set}", tags, mlflow_params) if is_main else contextlib.nullcontext()
    with tracking:
        if is_main:
            traced.tracker.log_input(_frame(rows), name=f"preferences/{pref_set}", source=str(data_file))
            log_preference_set(traced.tracker, processed, pref_set)  # generator params, gap analysis
            traced.tracer.adopt_start(Path(sft_model).parent)  # step 0 = the SFT run's final evaluation
        model = load_model(sft_model, params.model.dtype, params.model.device, params.model.trust_remote_code)
        ctx = BuildContext(
            model=model, tokenizer=tokenizer, dataset=dataset, train_kwargs=train_kwargs, hparams=hparams,
            max_length=params.po.max_length, callbacks=[traced.callback, *(callbacks or [])], run_dir=run_dir,
            params=params, model_path=Path(sft_model), tracker=traced.tracker if is_main else None,
        )
        log.info("%s: %s (needs %s)", algorithm, algo.description, algo.needs())
        trainer = algo.build(ctx)
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(str(run_dir / FINAL))
        if is_main:
            tokenizer.save_pretrained(str(run_dir / FINAL))
            traced.tracker.log_metrics({"time/eval_seconds": traced.tracer.eval_seconds}, step=trainer.state.global_step)
            drop_checkpoints(run_dir, trainer.state.log_history)  # only needed to resume; the final model and evaluations stay
    return run_dir


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [{**{k: r[k][-1]["content"] for k in PAIR_KEYS}, "chosen_stance": r.get("chosen_stance"),
          "rejected_stance": r.get("rejected_stance")} for r in rows]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift po", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--algorithm", required=True)
    ap.add_argument("--preference-set", required=True)
    ap.add_argument("--sft-model", default=None, help="one start model for every seed (default: each seed's SFT run)")
    ap.add_argument("--sft-runs", default="runs/sft", help="where the SFT runs are (default: runs/sft)")
    ap.add_argument("--processed", default="processed")
    ap.add_argument("--out", default="runs/po")
    a = ap.parse_args(argv)
    try:
        get_algorithm(a.algorithm)
    except KeyError as e:
        raise SystemExit(f"--algorithm: {e.args[0]}") from None
    params = load_params(a.params)
    for p in per_seed(params):  # `seeds` repeats the run, each from the same seed's SFT checkpoint
        sft_model = Path(a.sft_model) if a.sft_model else sft_final(p, Path(a.sft_runs))
        run_po(p, sft_model, Path(a.processed), Path(a.out), a.algorithm, a.preference_set)
