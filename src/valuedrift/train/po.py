"""Preference optimisation from the SFT checkpoint: one algorithm × one preference set, traced.

Reads ``processed/preferences/<set>.jsonl`` and the SFT model (``runs/sft/<po.start_from>/final``); writes
``runs/po/<algorithm>-<set>/`` (:mod:`valuedrift.core.rundir`). The algorithm comes from the registry
(:mod:`valuedrift.algorithms.registry`); its declared needs decide the data shape (paired, or unpaired
for KTO) and are recorded as MLflow tags. Step 0 is the SFT run's final evaluation (same weights), not
scored again. The shared scaffold (:mod:`valuedrift.train.scaffold`) resumes, traces, logs and saves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from valuedrift.adapters import quantization_config
from valuedrift.algorithms.base import BuildContext, DataKind
from valuedrift.algorithms.registry import algorithm_hparams, get_algorithm
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import flatten
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import file_digest, read_records
from valuedrift.core.paths import DATA, PREFERENCES_DIR, SFT_RUNS, gap_files, preference_file
from valuedrift.data.frames import PAIR_KEYS, pairs_frame
from valuedrift.tracking import Tracker, dataset_source
from valuedrift.train.scaffold import (
    RunPlan,
    TracedRun,
    flat_params,
    log_callbacks,
    run_inputs,
    seed_run_dir,
    train_traced,
)

log = logging.getLogger(__name__)

def sft_final(params: Params, runs: Path = SFT_RUNS) -> Path:
    """The SFT checkpoint a preference run of seed ``params.seed`` starts from: the same seed's
    ``runs/sft/<po.start_from>[/seeds/<seed>]/final``."""
    return seed_run_dir(runs, params.po.start_from, params).final


def to_unpaired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired → unpaired (KTO): each pair gives (prompt, chosen, True) and (prompt, rejected, False)."""
    out = []
    for r in rows:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return out


def log_preference_set(tracker: Tracker, processed: Path, name: str) -> None:
    """Record on an open MLflow run the set's generator parameters (``pref.*``), its resolved target and
    measured gap (``pref.gap.<stance>``), and its gap analysis as artifacts (``preferences/``). The dataset
    itself (with its digest) is logged as the run's input."""
    files = gap_files(processed, name)
    if not files["json"].exists():
        log.warning("no gap analysis for preference set %s (%s): not logged", name, files["json"])
        return
    meta = json.loads(files["json"].read_text())
    data_file = preference_file(processed, name)
    if data_file.exists() and meta.get("data_sha256") not in (None, file_digest(data_file)):
        log.warning("%s was regenerated after its gap analysis; the logged analysis may be stale", data_file)
    logged = {f"pref.{k}": v for k, v in flatten(meta.get("params") or {}).items()}
    for k in ("name", "condition", "target", "requested_gap", "generator", "seed", "labels", "n_pairs", "data_sha256", "digest"):
        if k in meta:
            logged[f"pref.{k}"] = meta[k]
    logged.update({f"pref.source.{k}": v for k, v in flatten(meta.get("source") or {}).items()})
    logged.update({f"pref.sft_profile.{s}": round(v, 6) for s, v in (meta.get("sft_profile") or {}).items()})
    logged.update({f"pref.gap.{s}": round(v, 6) for s, v in meta.get("gap", {}).items()})
    tracker.log_params(logged)
    for path in files.values():
        if path.exists():
            tracker.log_artifact(path, PREFERENCES_DIR)


def set_source(processed: Path, name: str) -> dict[str, Any] | None:
    """Where a preference set read from a dataset came from (its gap json's ``source``); None otherwise."""
    path = gap_files(processed, name)["json"]
    return json.loads(path.read_text()).get("source") if path.exists() else None


def po_inputs(params: Params, algorithm: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """What defines one po run: the po stage's keys in the stage table (this algorithm's ``po.hparams``
    entry among them) and the algorithm's resolved hyperparameters (the registry's defaults included)."""
    return {**run_inputs(params, "po", algorithm=algorithm), "algorithm": algorithm, "hparams": hparams}


def run_po(
    params: Params,
    sft_model: Path,
    processed: Path,
    out_root: Path,
    algorithm: str,
    pref_set: str,
    callbacks: list[Any] | None = None,
    data_dir: Path = DATA,
    variant: str | None = None,
) -> Path:
    """Train, trace and save one (algorithm, preference set) run; returns its run folder.

    ``callbacks`` are extra ``TrainerCallback`` objects (e.g. an Optuna pruning hook); ``data_dir`` holds
    the probe bank the stances are traced on; ``variant`` names a retraining on other data (``valuedrift
    retrain``): the MLflow run ``<algorithm>-<set>-<variant>``, tagged ``counterfactual: <variant>``.
    """
    algo = get_algorithm(algorithm)
    if pref_set not in params.prepare_data.preference_sets:
        raise ConfigError(
            "--preference-set",
            f"{pref_set!r} is not in prepare_data.preference_sets ({', '.join(params.prepare_data.preference_sets)})",
        )
    if not (Path(sft_model) / "config.json").exists():
        raise ConfigError("po.start_from", f"{sft_model}: no SFT checkpoint there (config.json missing); run the sft stage first")
    hparams = algorithm_hparams(params.po.hparams, algorithm)
    if algo.check is not None:  # cross-checks with po.* (also run by check-params for po.algorithms)
        algo.check(hparams, params.po, f"po.hparams.{algorithm}")
    data_file = preference_file(processed, pref_set)
    rows = read_records(data_file, lambda obj, path, line: obj)
    paired = [{k: r[k] for k in PAIR_KEYS} for r in rows]
    cfg = params.po
    run_name = f"{algorithm}-{pref_set}"

    def build(model: Any, tokenizer: Any, kwargs: dict[str, Any], trainer_callbacks: list[Any], traced: TracedRun) -> Any:
        from datasets import Dataset

        dataset = Dataset.from_list(paired if algo.data is DataKind.PAIRED else to_unpaired(paired))
        ctx = BuildContext(
            model=model, tokenizer=tokenizer, dataset=dataset, train_kwargs=kwargs, hparams=hparams,
            max_length=cfg.max_length, callbacks=trainer_callbacks, run_dir=traced.tracer.run_dir,
            model_path=Path(sft_model), log_callbacks=log_callbacks(traced.tracker if traced.tracker.run_id else None),
            adapter=cfg.peft, quantization=quantization_config(cfg.peft, params.model.dtype, params.model.device, "po.peft"),
        )
        log.info("%s: %s (needs %s)", algorithm, algo.description, algo.needs())
        return algo.build(ctx)

    def before_train(traced: TracedRun) -> None:
        log_preference_set(traced.tracker, processed, pref_set)  # generator params, gap analysis
        traced.adopt_start(Path(sft_model).parent)  # step 0 = the SFT run's final evaluation (every route)

    plan = RunPlan(
        kind="po", name=run_name, run_name=run_name + (f"-{variant}" if variant else ""), train=cfg, start_model=Path(sft_model), data_file=data_file,
        inputs=po_inputs(params, algorithm, hparams), build_trainer=build, n_examples=algo.examples(len(paired), hparams),
        algorithm=algorithm,
        tags={"preference_set": pref_set, "sft_model": str(sft_model), **{f"needs.{k}": str(v) for k, v in algo.needs().items()},
              **({"counterfactual": variant} if variant else {})},
        mlflow_params={**flat_params(params, "po"), **{f"hp.{k}": v for k, v in hparams.items()}},
        frame=pairs_frame(rows), input_name=f"preferences/{pref_set}", before_train=before_train,
        input_source=dataset_source(set_source(processed, pref_set), str(data_file)),
    )
    return train_traced(params, plan, out_root, callbacks, data_dir).path
