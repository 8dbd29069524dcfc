"""Building the synthetic preference sets: plan each set (target, topics, generator), generate it from the
response bank or an LM-written bank, check it for leaks, and write it with its gap analysis.

A set's target is a stance, or the condition ``reinforce`` / ``reverse`` resolved from the SFT run's
measured profile (:func:`valuedrift.data.preferences.resolve_target`). Used by the ``preferences`` stage
and by every sweep trial (which rebuilds the set with the trial's value gap).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.config.schema.data import PreferenceSetConfig
from valuedrift.config.schema.evaluation import EvalConfig, JudgeConfig
from valuedrift.config.schema.models import ModelConfig
from valuedrift.config.schema.parse import to_dict
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import file_digest, write_jsonl
from valuedrift.core.rundir import JUDGED_DIR, RunDir
from valuedrift.data.bank import ResponseBank
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.preferences import generate_pairs, question_pool, resolve_target, set_seed
from valuedrift.data.schemas import Probe
from valuedrift.generation.lm_answers import check_lm_settings, kept_per_stance, lm_response_bank
from valuedrift.metrics.value_gap import gap_table, generator_labels, overall, write_gap_analysis
from valuedrift.stance.vectors import record_profile

log = logging.getLogger(__name__)


def sft_profile(sft_run: Path) -> dict[str, float] | None:
    """The stance profile v(all) over every probe scored at the last checkpoint of the SFT run, or None if the
    run has no checkpoint yet: on the judged route (``<run>/judged/trajectory.json``, ``eval.trace_judged``)
    when the run traced it, since that route follows what the model says; else the likelihood route
    (``trajectory.json``, written by train/tracing.py).

    Read as plain JSON, so this stage does not import the training stack."""
    judged = RunDir(Path(sft_run) / JUDGED_DIR)
    checkpoints = judged.checkpoint_records() or RunDir(sft_run).checkpoint_records()
    if not checkpoints:
        return None
    return record_profile(checkpoints[-1])


@dataclass
class SetPlan:
    """A preference set, checked and ready to generate."""

    name: str
    key: str
    cfg: PreferenceSetConfig
    target: str
    seed: int


def plan_sets(sets: Mapping[str, PreferenceSetConfig], judges: Mapping[str, JudgeConfig], seed: int,
              names: list[str] | None, questions: list[Probe], bank: ResponseBank,
              profile: dict[str, float] | None) -> list[SetPlan]:
    """Resolve every requested set's target and check its topic selection, before generating anything.

    ``sets`` = ``prepare_data.preference_sets``, ``judges`` = ``eval.judges`` (an LM-written set's judge),
    ``seed`` = the top-level ``seed`` (each set's seed derives from it and the set's name)."""
    for n in names or []:
        if n not in sets:
            raise ConfigError("--set", f"{n!r} is not defined in prepare_data.preference_sets ({', '.join(sets)})")
    plans = []
    for name in sorted(names or sets):
        cfg, key = sets[name], f"prepare_data.preference_sets.{name}"
        target = resolve_target(cfg.target, profile, f"{key}.target")
        question_pool(cfg, questions, bank if cfg.generator == "bank" else None, key)
        if cfg.generator != "bank":
            check_lm_settings(cfg, f"{key}.lm", judges)
        plans.append(SetPlan(name, key, cfg, target, set_seed(seed, name)))
    return plans


def build_set(plan: SetPlan, ev: EvalConfig, model: ModelConfig, questions: list[Probe], bank: ResponseBank, out_dir: Path,
              profile: dict[str, float] | None) -> dict[str, Any]:
    """Generate one set, check it for leaks, write it and its gap analysis. Returns the gap summary.

    From ``ev`` (the ``eval`` section): the judges of an LM-written set and the gap table's bootstrap and
    CI; ``model`` sets how an hf generator or judge loads."""
    cfg = plan.cfg
    if cfg.generator != "bank":
        bank, answers = lm_response_bank(cfg, questions, plan.seed, plan.key, ev.judges, model)
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
    table = gap_table(generator_labels(pairs), ev.bootstrap, ev.ci, plan.seed)
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
        "data_sha256": file_digest(data_file),
    }
    write_gap_analysis(table, out_dir / plan.name, f"{plan.name}: target {plan.target}, requested gap {cfg.gap}", meta)
    gap = overall(table)
    log.info("preference set %s: target %s, %d pairs, measured gap %s", plan.name, plan.target, len(pairs),
             {s: round(v, 3) for s, v in gap.items()})
    return gap
