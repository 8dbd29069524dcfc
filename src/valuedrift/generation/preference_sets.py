"""Building the preference sets: plan each set (target, topics, generator), generate it from the response
bank or an LM-written bank, or read it from a dataset (``generator: source``, data/sources.py), check it
for leaks, and write it with its gap analysis.

A set's target is a stance, or the condition ``reinforce`` / ``reverse`` resolved from the SFT run's
measured profile (:func:`valuedrift.data.preferences.resolve_target`). Used by the ``preferences`` stage
and by every sweep trial (which rebuilds the set with the trial's value gap).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
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
from valuedrift.data.frames import frame_digest, pairs_frame
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.preferences import generate_pairs, question_pool, resolve_target, set_seed
from valuedrift.data.schemas import Probe
from valuedrift.data.sources import check_source, load_source
from valuedrift.generation.lm_answers import check_lm_settings, kept_per_stance, lm_response_bank
from valuedrift.metrics.value_gap import (
    gap_table,
    generator_labels,
    judge_labels,
    labelled,
    overall,
    write_gap_analysis,
)
from valuedrift.stance.judges import build_judge, check_judge, judge_probs
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
    """A preference set, checked and ready to generate. ``target`` is None for a set read from a dataset;
    ``judge`` is the judge that labels such a set for its gap analysis."""

    name: str
    key: str
    cfg: PreferenceSetConfig
    target: str | None
    seed: int
    judge: str | None = None


def plan_sets(sets: Mapping[str, PreferenceSetConfig], judges: Mapping[str, JudgeConfig], seed: int,
              names: list[str] | None, questions: list[Probe], bank: ResponseBank,
              profile: dict[str, float] | None, paper_judge: str = "") -> list[SetPlan]:
    """Resolve every requested set's target and check its topic selection, before generating anything.

    ``sets`` = ``prepare_data.preference_sets``, ``judges`` = ``eval.judges`` (an LM-written set's judge),
    ``seed`` = the top-level ``seed`` (each set's seed derives from it and the set's name),
    ``paper_judge`` = ``eval.paper.judge`` (the default judge of a set read from a dataset)."""
    for n in names or []:
        if n not in sets:
            raise ConfigError("--set", f"{n!r} is not defined in prepare_data.preference_sets ({', '.join(sets)})")
    plans = []
    for name in sorted(names or sets):
        cfg, key = sets[name], f"prepare_data.preference_sets.{name}"
        if cfg.source is not None:
            plans.append(plan_source_set(name, key, cfg, judges, seed, paper_judge))
            continue
        target = resolve_target(cfg.target, profile, f"{key}.target")
        question_pool(cfg, questions, bank if cfg.generator == "bank" else None, key)
        if cfg.generator != "bank":
            check_lm_settings(cfg, f"{key}.lm", judges)
        plans.append(SetPlan(name, key, cfg, target, set_seed(seed, name)))
    return plans


def plan_source_set(name: str, key: str, cfg: PreferenceSetConfig, judges: Mapping[str, JudgeConfig], seed: int,
                    paper_judge: str) -> SetPlan:
    """A set read from a dataset: its source options and its judge (``source.judge``, else
    ``paper_judge``) are checked; the judge is built only if the pairs turn out to carry no labels."""
    assert cfg.source is not None
    check_source(cfg.source, "preferences", f"{key}.source")
    judge = cfg.source.judge or paper_judge
    if judge not in judges:
        raise ConfigError(f"{key}.source.judge", f"{judge!r} is not defined in eval.judges ({', '.join(judges)})")
    check_judge(judges[judge], f"eval.judges.{judge}")
    return SetPlan(name, key, cfg, None, set_seed(seed, name), judge)


def read_source_set(plan: SetPlan, ev: EvalConfig, model: ModelConfig, questions: list[Probe]) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """The pairs of a set read from a dataset, their per-pair stance distributions (the file's own labels
    when every pair has them, else the plan's judge) and the gap analysis' extra metadata."""
    assert plan.cfg.source is not None and plan.judge is not None
    loaded = load_source(plan.cfg.source, "preferences", f"{plan.key}.source", plan.seed, questions)
    pairs = loaded.rows
    if labelled(pairs):
        return pairs, generator_labels(pairs), {"labels": "generator", "source": loaded.info}
    judge = build_judge(plan.judge, ev.judges[plan.judge], f"eval.judges.{plan.judge}", model.dtype, model.device, model.trust_remote_code)
    return pairs, judge_labels(pairs, partial(judge_probs, judge)), {"labels": f"judge:{plan.judge}", "source": loaded.info}


def build_set(plan: SetPlan, ev: EvalConfig, model: ModelConfig, questions: list[Probe], bank: ResponseBank, out_dir: Path,
              profile: dict[str, float] | None) -> dict[str, Any]:
    """Generate one set, check it for leaks, write it and its gap analysis. Returns the gap summary.

    From ``ev`` (the ``eval`` section): the judges of an LM-written set and the gap table's bootstrap and
    CI; ``model`` sets how an hf generator or judge loads."""
    cfg = plan.cfg
    data_file = out_dir / f"{plan.name}.jsonl"
    if cfg.source is not None:
        pairs, labels, extra = read_source_set(plan, ev, model, questions)
        write_jsonl(data_file, pairs)
        return write_set_analysis(plan, pairs, labels, extra, ev, data_file, profile)
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
    write_jsonl(data_file, pairs)
    return write_set_analysis(plan, pairs, generator_labels(pairs), {"labels": "generator"}, ev, data_file, profile)


def write_set_analysis(plan: SetPlan, pairs: list[dict[str, Any]], labels: Any, extra: dict[str, Any], ev: EvalConfig,
                       data_file: Path, profile: dict[str, float] | None) -> dict[str, float]:
    """Write the gap analysis of a written set (``labels``: per-pair stance distributions; ``extra``: the
    labels' origin and, for a set read from a dataset, its source and MLflow digest). Returns gap(all)."""
    cfg = plan.cfg
    table = gap_table(labels, ev.bootstrap, ev.ci, plan.seed)
    if "source" in extra:
        extra["digest"] = frame_digest(pairs_frame(pairs))
    meta = {
        "name": plan.name,
        "condition": cfg.target,
        "target": plan.target,
        "requested_gap": cfg.gap,
        "generator": cfg.generator,
        "seed": plan.seed,
        "sft_profile": profile,
        "params": to_dict(cfg),
        "data_sha256": file_digest(data_file),
        **extra,
    }
    if cfg.source is not None:  # no target, no requested gap: the data's own
        meta.update(condition=None, requested_gap=None)
        title = f"{plan.name}: {cfg.source.kind} {cfg.source.path} (labels: {extra['labels']})"
    else:
        title = f"{plan.name}: target {plan.target}, requested gap {cfg.gap}"
    write_gap_analysis(table, data_file.with_suffix(""), title, meta)
    gap = overall(table)
    log.info("preference set %s: target %s, %d pairs, measured gap %s", plan.name, plan.target, len(pairs),
             {s: round(v, 3) for s, v in gap.items()})
    return gap
