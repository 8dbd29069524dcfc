"""``preferences`` stage: generate the synthetic value-gap preference sets and analyse their gap.

For each set in ``prepare_data.preference_sets`` (or only those named with ``--set``) writes, under
``processed/preferences/``:

- ``<name>.jsonl``: the pairs (prompt/chosen/rejected + the generator's stance and style labels);
- ``<name>.gap.json|csv|png``: the value-gap analysis (value_gap.py) with the set's generator parameters,
  resolved target and the SFT profile it was resolved from;
- ``<name>.answers.jsonl`` (LM backends only): every generated answer with its judged stance and whether
  it was kept.

Targets ``reinforce``/``reverse`` are resolved from the SFT checkpoint's measured stance profile
(``runs/sft/<po.start_from>/trajectory.json``, last checkpoint: the run preference training starts
from). Every set is checked (target, topics, generator settings) before any is generated; a bad value
fails naming its key.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.config import ConfigError, Params, PreferenceSetConfig, flatten, load_params, to_dict
from valuedrift.data.bank import ResponseBank, load_bank
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.preferences import generate_pairs, question_pool, resolve_target, set_seed
from valuedrift.data.probes import load_probe_bank
from valuedrift.data.schemas import STANCES, Probe, write_jsonl
from valuedrift.trajectory import load_trajectory
from valuedrift.value_gap import gap_table, generator_labels, overall, write_gap_analysis

log = logging.getLogger(__name__)

PREFERENCES_DIR = "preferences"


def sft_profile(sft_run: Path) -> dict[str, float] | None:
    """The stance profile v(all) over every probe scored at the last checkpoint of the SFT run (its
    ``trajectory.json``, written by train/tracing.py), or None if the run has no checkpoint yet.

    Read as plain JSON, so this stage does not import the training stack."""
    checkpoints = load_trajectory(Path(sft_run))["checkpoints"]
    if not checkpoints:
        return None
    last = checkpoints[-1]
    row = next(r for r in last.get("full") or last["trace"] if r["split"] == "all" and r["topic"] == "all")
    return {s: float(row[s]) for s in STANCES}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class SetPlan:
    """A preference set, checked and ready to generate."""

    name: str
    key: str
    cfg: PreferenceSetConfig
    target: str
    seed: int


def plan_sets(params: Params, names: list[str] | None, questions: list[Probe], bank: ResponseBank,
              profile: dict[str, float] | None) -> list[SetPlan]:
    """Resolve every requested set's target and check its topic selection, before generating anything."""
    sets = params.prepare_data.preference_sets
    for n in names or []:
        if n not in sets:
            raise ConfigError("--set", f"{n!r} is not defined in prepare_data.preference_sets ({', '.join(sets)})")
    plans = []
    for name in sorted(names or sets):
        cfg, key = sets[name], f"prepare_data.preference_sets.{name}"
        target = resolve_target(cfg.target, profile, f"{key}.target")
        question_pool(cfg, questions, bank if cfg.generator == "bank" else None, key)
        if cfg.generator != "bank":
            from valuedrift.data.lm_generator import check_lm_settings

            check_lm_settings(cfg, f"{key}.lm", params)
        plans.append(SetPlan(name, key, cfg, target, set_seed(params.seed, name)))
    return plans


def build_set(plan: SetPlan, params: Params, questions: list[Probe], bank: ResponseBank, out_dir: Path,
              profile: dict[str, float] | None) -> dict[str, Any]:
    """Generate one set, check it for leaks, write it and its gap analysis. Returns the gap summary."""
    cfg = plan.cfg
    if cfg.generator != "bank":
        from valuedrift.data.lm_generator import kept_per_stance, lm_response_bank

        bank, answers = lm_response_bank(cfg, questions, plan.seed, plan.key, params)
        write_jsonl(out_dir / f"{plan.name}.answers.jsonl", answers)
        if not bank.question_ids():
            raise ConfigError(
                f"{plan.key}.lm",
                f"the judge {cfg.lm.judge!r} kept answers in all three stances for no question (kept per requested "
                f"stance: {kept_per_stance(answers)}; every answer and its judgement: "
                f"{out_dir / f'{plan.name}.answers.jsonl'}). Raise lm.candidates, lower lm.min_judge_prob, or use "
                "a stronger generator or judge",
            )
    pairs = generate_pairs(cfg, questions, bank, plan.seed, plan.target, plan.key)
    assert_no_leaks(pairs, questions, f"preference set {plan.name}")
    data_file = out_dir / f"{plan.name}.jsonl"
    write_jsonl(data_file, pairs)
    table = gap_table(generator_labels(pairs), params.eval.bootstrap, params.eval.ci, plan.seed)
    meta = {
        "name": plan.name,
        "condition": cfg.target,
        "target": plan.target,
        "requested_gap": cfg.gap,
        "generator": cfg.generator,
        "seed": plan.seed,
        "labels": "generator",
        "sft_profile": profile,
        "params": to_dict(cfg),
        "data_sha256": sha256_file(data_file),
    }
    write_gap_analysis(table, out_dir / plan.name, f"{plan.name}: target {plan.target}, requested gap {cfg.gap}", meta)
    gap = overall(table)
    log.info("preference set %s: target %s, %d pairs, measured gap %s", plan.name, plan.target, len(pairs),
             {s: round(v, 3) for s, v in gap.items()})
    return gap


def gap_files(processed: Path, name: str) -> dict[str, Path]:
    """The gap-analysis files of set ``name`` (csv, json, png) under ``processed/preferences/``."""
    return {ext: Path(processed) / PREFERENCES_DIR / f"{name}.gap.{ext}" for ext in ("csv", "json", "png")}


def log_preference_set(tracker: Any, processed: Path, name: str) -> None:
    """Record on an open MLflow run (``tracking.Tracker``) the set's generator parameters (``pref.*``), its
    resolved target and measured gap (``pref.gap.<stance>``), and its gap analysis as artifacts
    (``preferences/``). The dataset itself (with its digest) is logged by the caller with ``log_input``.
    """
    files = gap_files(processed, name)
    if not files["json"].exists():
        log.warning("no gap analysis for preference set %s (%s): not logged", name, files["json"])
        return
    meta = json.loads(files["json"].read_text())
    data_file = Path(processed) / PREFERENCES_DIR / f"{name}.jsonl"
    if data_file.exists() and meta.get("data_sha256") not in (None, sha256_file(data_file)):
        log.warning("%s was regenerated after its gap analysis; the logged analysis may be stale", data_file)
    logged = {f"pref.{k}": v for k, v in flatten(meta.get("params") or {}).items()}
    for k in ("name", "condition", "target", "requested_gap", "generator", "seed", "labels", "n_pairs", "data_sha256"):
        if k in meta:
            logged[f"pref.{k}"] = meta[k]
    logged.update({f"pref.sft_profile.{s}": round(v, 6) for s, v in (meta.get("sft_profile") or {}).items()})
    logged.update({f"pref.gap.{s}": round(v, 6) for s, v in meta.get("gap", {}).items()})
    tracker.log_params(logged)
    for path in files.values():
        if path.exists():
            tracker.log_artifact(path, PREFERENCES_DIR)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift preferences", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--set", action="append", dest="sets", metavar="NAME",
                    help="generate only this preference set (repeatable; default: all)")
    ap.add_argument("--sft-run", default=None, help="default: runs/sft/<po.start_from>")
    ap.add_argument("--out", default="processed")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    data = Path(a.data)
    questions = load_probe_bank(data, annotated_only=False)  # every question; propositions where annotated
    bank = load_bank(data)
    profile = sft_profile(Path(a.sft_run or f"runs/sft/{params.po.start_from}"))
    plans = plan_sets(params, a.sets, questions, bank, profile)
    out_dir = Path(a.out) / PREFERENCES_DIR
    for plan in plans:
        build_set(plan, params, questions, bank, out_dir, profile)
