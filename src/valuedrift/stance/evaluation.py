"""Evaluating a checkpoint's stances (library side of the ``eval`` and ``judge-eval`` stages).

Checkpoint checks, loading the policy, choosing the probes, building the judge and the two route
scorers, reusing a training run's own final evaluation, :func:`evaluate` (score → value vectors →
alignment to the reference profiles, no files written) and a fresh MLflow run per evaluation.

- likelihood route: q(p) = softmax(ℓ/τ) from the annotated stance statements;
- paper route: q(p) = mean_k p_J(·|p, y_k) over K sampled answers judged by J.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.config.schema.data import CorpusMix
from valuedrift.config.schema.evaluation import EvalConfig, JudgeConfig
from valuedrift.config.schema.models import ModelConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.rundir import RunDir
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.data.loaders.probes import load_probes
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.data.schemas import Probe
from valuedrift.models import BUNDLED, check_model_spec, load_configured, load_tokenizer
from valuedrift.stance.judges import JudgeHTTPError, build_judge
from valuedrift.stance.reference import ReferenceProfile, alignment_table, load_profiles, mix_profile
from valuedrift.stance.stored import final_evaluation, scorer_signature
from valuedrift.stance.vectors import value_vectors

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Inputs: checkpoint, policy, probes, judge, reference profiles
# --------------------------------------------------------------------------------------------------


def check_checkpoint(checkpoint: str) -> None:
    """Fail before any work when ``checkpoint`` is neither a model folder nor a hub id."""
    if checkpoint in BUNDLED:
        raise ConfigError("--checkpoint", f"{checkpoint!r} is a bundled name: run `valuedrift prepare-model` and pass models/base")
    problem = check_model_spec(checkpoint)
    if problem:
        raise ConfigError("--checkpoint", problem)


def load_policy(model: ModelConfig, checkpoint: str) -> tuple[Any, Any]:
    """(tokenizer, model) of ``checkpoint`` with the ``model`` section's dtype, device, trust and attention settings."""
    return load_tokenizer(checkpoint, model.trust_remote_code), load_configured(checkpoint, model)


def checkpoint_step(checkpoint: str) -> int:
    """Global training step of a Trainer checkpoint (trainer_state.json), else 0."""
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("global_step", 0)) if state.exists() else 0


def choose_probes(ev: EvalConfig, probe_seed: int, route: str, probes_spec: str | None, per_topic: int | None, data_dir: Path) -> list[Probe]:
    """The probes to score: V-PRISM (annotated) or a loader spec, filtered to eval.splits, per_topic per group."""
    if probes_spec:
        probes = load_probes(probes_spec)
    else:
        probes = load_probe_bank(data_dir, annotated_only=route == "likelihood")
    if route == "likelihood":
        missing = [p.id for p in probes if not p.annotated]
        if missing:
            raise ConfigError("--route", f"the likelihood route needs stance statements; {len(missing)} probes have none (use --route paper)")
    if per_topic is None:
        per_topic = ev.phase_probes_per_topic if route == "likelihood" else ev.paper.probes_per_topic
    chosen = select_probes(probes, per_topic, ev.splits, probe_seed)
    if not chosen:
        raise ConfigError("eval.splits", f"no probe is in the splits {ev.splits} (probes here: {sorted({p.split for p in probes})})")
    return chosen


def make_judge(judges: Mapping[str, JudgeConfig], model: ModelConfig, name: str) -> Any:
    """The judge ``name`` from ``eval.judges``, preflighted (an unusable endpoint fails here, naming its key)."""
    if name not in judges:
        raise ConfigError("eval.judges", f"no judge named {name!r} (defined: {', '.join(judges)})")
    judge = build_judge(name, judges[name], f"eval.judges.{name}", model.dtype, model.device, model.trust_remote_code)
    preflight = getattr(judge, "preflight", None)
    if preflight is not None:
        try:
            preflight()  # an unreachable endpoint, or one without logprobs, fails before any sampling
        except JudgeHTTPError as e:
            raise ConfigError(f"eval.judges.{name}.base_url", str(e)) from e
    return judge


def reference_profiles(directory: str, corpora: Mapping[str, CorpusMix]) -> dict[str, ReferenceProfile]:
    """Profiles in ``directory`` (``eval.reference_profiles``) plus one per authored SFT corpus stance mix
    (``corpus_<name>``; none for a corpus read from a dataset, whose ``mix`` is unused)."""
    if not Path(directory).is_dir():
        raise ConfigError("eval.reference_profiles", f"{directory}: folder not found")
    profiles = load_profiles(directory)
    for name, corpus in corpora.items():
        if corpus.source is not None:  # read from a dataset: no authored mix (valuedrift stance-mix measures one)
            continue
        profiles[f"corpus_{name}"] = mix_profile(f"corpus_{name}", corpus.mix, f"stance mix of the value rows of SFT corpus {name}")
    return profiles


# --------------------------------------------------------------------------------------------------
# Route scorers
# --------------------------------------------------------------------------------------------------


def likelihood_scorer(ev: EvalConfig, tokenizer: Any) -> Any:
    from valuedrift.stance.likelihood import LikelihoodScorer

    return LikelihoodScorer(tokenizer, ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)


def stored_likelihood_rows(ev: EvalConfig, checkpoint: str, probes: list[Probe]) -> pd.DataFrame | None:
    """The training run's own final evaluation of ``checkpoint`` (``<run>/final``), when it scored exactly
    these probes with the same settings: the same numbers, without scoring the weights again."""

    path = Path(checkpoint)
    run = RunDir(path.parent)
    if path != run.final or not run.trajectory_file.exists():
        return None
    found = final_evaluation(path.parent, scorer_signature(likelihood_scorer(ev, None)), {p.id for p in probes})
    return pd.DataFrame(found[0]) if found else None


def likelihood_rows(ev: EvalConfig, tokenizer: Any, model: Any, probes: list[Probe]) -> pd.DataFrame:
    return pd.DataFrame(likelihood_scorer(ev, tokenizer).score(model, probes, progress=True))


def paper_scorer(ev: EvalConfig, seed: int, tokenizer: Any, judge: Any) -> Any:
    from valuedrift.stance.paper_route import PaperRouteScorer

    return PaperRouteScorer(tokenizer, judge, ev.paper, seed, ev.prompt_format, ev.system_prompt)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    route: str
    probes: pd.DataFrame
    samples: pd.DataFrame | None
    vectors: pd.DataFrame
    alignment: pd.DataFrame
    summary: dict[str, Any]


def evaluate(
    ev: EvalConfig, model: ModelConfig, corpora: Mapping[str, CorpusMix], seed: int,
    checkpoint: str, route: str, probes: list[Probe], judge: Any = None,
) -> EvalResult:
    """Score ``probes`` on ``checkpoint`` with ``route``; no files written.

    ``ev`` = the ``eval`` section, ``model`` = the ``model`` section (how the checkpoint loads), ``corpora`` =
    ``prepare_data.corpora`` (their stance mixes join the reference profiles), ``seed`` = the top-level
    ``seed`` (bootstrap resampling and the paper route's sampling)."""
    t0 = time.perf_counter()
    samples = None
    stored = stored_likelihood_rows(ev, checkpoint, probes) if route == "likelihood" else None
    if stored is not None:
        log.info("%s: using its training run's final evaluation (same weights, probes and settings)", checkpoint)
        table = stored
        vectors = value_vectors(table, ev.bootstrap, ev.ci, seed)
    elif route == "likelihood":
        tokenizer, policy = load_policy(model, checkpoint)
        table = likelihood_rows(ev, tokenizer, policy, probes)
        vectors = value_vectors(table, ev.bootstrap, ev.ci, seed)
    else:
        tokenizer, policy = load_policy(model, checkpoint)
        table, samples = paper_scorer(ev, seed, tokenizer, judge).score(policy, probes, progress=True)
        vectors = value_vectors(samples, ev.bootstrap, ev.ci, seed)
    alignment = alignment_table(vectors, reference_profiles(ev.reference_profiles, corpora))
    overall = vectors[vectors.topic == ALL]
    summary: dict[str, Any] = {
        "checkpoint": checkpoint,
        "route": route,
        "step": checkpoint_step(checkpoint),
        "n_probes": len(table),
        "seconds": round(time.perf_counter() - t0, 1),
        "reused_training_evaluation": stored is not None,
        "stance": {r.split: {s: float(getattr(r, s)) for s in STANCES} | {f"{s}_ci": [float(getattr(r, f"{s}_lo")), float(getattr(r, f"{s}_hi"))] for s in STANCES}
                   for r in overall.itertuples(index=False)},
        "alignment": {f"{r.profile}/{r.split}": {"jsd": r.jsd_alignment, "w1": r.w1_alignment}
                      for r in alignment[alignment.topic == ALL].itertuples(index=False)},
    }
    if route == "paper":
        c = ev.paper
        summary["paper"] = {"k": c.k, "temperature": c.temperature, "top_p": c.top_p, "max_new_tokens": c.max_new_tokens,
                            "judge": getattr(judge, "name", c.judge), "mean_label_mass": float(samples["label_mass"].mean()),
                            "mean_new_tokens": float(samples["new_tokens"].mean()), "finished_share": float(samples["finished"].mean())}
    return EvalResult(route, table, samples, vectors, alignment, summary)

