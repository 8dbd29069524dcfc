"""``eval``: measure the stances of any checkpoint (local folder or hub id) on either route.

- ``--route likelihood``: q(p) = softmax(ℓ/τ) from the annotated stance statements (all annotated probes
  per (split, topic) by default, ``eval.phase_probes_per_topic``);
- ``--route paper``: K sampled answers per probe judged by ``eval.paper.judge``,
  q(p) = mean_k p_J(·|p, y_k) (``eval.paper.probes_per_topic`` probes per (split, topic)).

Probes: the V-PRISM bank (default) or ``--probes <kind>:<hub id or path>`` (v_prism, prism, opinionqa,
global_opinionqa; see :mod:`valuedrift.data.loaders.probes`; those without statements need the paper route).

Writes to ``--out``: ``tables/probes.jsonl`` (q(p) per probe), ``tables/samples.jsonl`` (paper route: every
answer with its p_J), ``vectors.csv`` (value vectors per split × topic with bootstrap CIs), ``alignment.csv``
(1 − JSD and 1 − W1/(N−1) to every reference profile in ``eval.reference_profiles`` and to each SFT corpus
mix), ``table.md`` (the same as a readable table) and ``summary.json`` (headline numbers, for
``dvc metrics``); then mirrors them to a new MLflow run (stage ``eval``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.config.load import load_params
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import flatten, to_dict
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import write_json, write_jsonl
from valuedrift.core.rundir import RunDir
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.data.loaders.probes import load_probes
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.data.schemas import Probe
from valuedrift.models import BUNDLED, check_model_spec, load_model, load_tokenizer
from valuedrift.stance.judges import JudgeHTTPError, build_judge
from valuedrift.stance.reference import ReferenceProfile, alignment_table, load_profiles, mix_profile
from valuedrift.stance.vectors import metric_dict, value_vectors
from valuedrift.tracking import Tracker, provenance_tags

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Shared with judge_eval
# --------------------------------------------------------------------------------------------------


def check_checkpoint(checkpoint: str) -> None:
    """Fail before any work when ``checkpoint`` is neither a model folder nor a hub id."""
    if checkpoint in BUNDLED:
        raise ConfigError("--checkpoint", f"{checkpoint!r} is a bundled name: run `valuedrift prepare-model` and pass models/base")
    problem = check_model_spec(checkpoint)
    if problem:
        raise ConfigError("--checkpoint", problem)


def load_policy(params: Params, checkpoint: str) -> tuple[Any, Any]:
    m = params.model
    return load_tokenizer(checkpoint, m.trust_remote_code), load_model(checkpoint, m.dtype, m.device, m.trust_remote_code)


def checkpoint_step(checkpoint: str) -> int:
    """Global training step of a Trainer checkpoint (trainer_state.json), else 0."""
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("global_step", 0)) if state.exists() else 0


def choose_probes(params: Params, route: str, probes_spec: str | None, per_topic: int | None, data_dir: Path) -> list[Probe]:
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
        per_topic = params.eval.phase_probes_per_topic if route == "likelihood" else params.eval.paper.probes_per_topic
    chosen = select_probes(probes, per_topic, params.eval.splits, params.probe_seed)
    if not chosen:
        raise ConfigError("eval.splits", f"no probe is in the splits {params.eval.splits} (probes here: {sorted({p.split for p in probes})})")
    return chosen


def make_judge(params: Params, name: str) -> Any:

    if name not in params.eval.judges:
        raise ConfigError("eval.judges", f"no judge named {name!r} (defined: {', '.join(params.eval.judges)})")
    m = params.model
    judge = build_judge(name, params.eval.judges[name], f"eval.judges.{name}", m.dtype, m.device, m.trust_remote_code)
    preflight = getattr(judge, "preflight", None)
    if preflight is not None:

        try:
            preflight()  # an unreachable endpoint, or one without logprobs, fails before any sampling
        except JudgeHTTPError as e:
            raise ConfigError(f"eval.judges.{name}.base_url", str(e)) from e
    return judge


def likelihood_scorer(params: Params, tokenizer: Any) -> Any:
    from valuedrift.stance.likelihood import LikelihoodScorer

    ev = params.eval
    return LikelihoodScorer(tokenizer, ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)


def stored_likelihood_rows(params: Params, checkpoint: str, probes: list[Probe]) -> pd.DataFrame | None:
    """The training run's own final evaluation of ``checkpoint`` (``<run>/final``), when it scored exactly
    these probes with the same settings: the same numbers, without scoring the weights again."""
    from valuedrift.train.tracing import final_evaluation, scorer_signature

    path = Path(checkpoint)
    run = RunDir(path.parent)
    if path != run.final or not run.trajectory_file.exists():
        return None
    found = final_evaluation(path.parent, scorer_signature(likelihood_scorer(params, None)), {p.id for p in probes})
    return pd.DataFrame(found[0]) if found else None


def likelihood_rows(params: Params, tokenizer: Any, model: Any, probes: list[Probe]) -> pd.DataFrame:
    return pd.DataFrame(likelihood_scorer(params, tokenizer).score(model, probes, progress=True))


def paper_scorer(params: Params, tokenizer: Any, judge: Any) -> Any:
    from valuedrift.stance.paper_route import PaperRouteScorer

    ev = params.eval
    return PaperRouteScorer(tokenizer, judge, ev.paper, params.seed, ev.prompt_format, ev.system_prompt)


def reference_profiles(params: Params) -> dict[str, ReferenceProfile]:
    """Profiles from ``eval.reference_profiles`` plus one per SFT corpus stance mix (``corpus_<name>``)."""
    if not Path(params.eval.reference_profiles).is_dir():
        raise ConfigError("eval.reference_profiles", f"{params.eval.reference_profiles}: folder not found")
    profiles = load_profiles(params.eval.reference_profiles)
    for name, corpus in params.prepare_data.corpora.items():
        profiles[f"corpus_{name}"] = mix_profile(f"corpus_{name}", corpus.mix, f"stance mix of the value rows of SFT corpus {name}")
    return profiles


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    route: str
    probes: pd.DataFrame
    samples: pd.DataFrame | None
    vectors: pd.DataFrame
    alignment: pd.DataFrame
    summary: dict[str, Any]


def markdown_table(vectors: pd.DataFrame, alignment: pd.DataFrame) -> str:
    lines = ["| split | topic | n | support [95% CI] | neutral [95% CI] | oppose [95% CI] |", "|---|---|---|---|---|---|"]
    for r in vectors.itertuples(index=False):
        cells = [f"{getattr(r, s):.3f} [{getattr(r, f'{s}_lo'):.3f}, {getattr(r, f'{s}_hi'):.3f}]" for s in STANCES]
        lines.append(f"| {r.split} | {r.topic} | {r.n} | " + " | ".join(cells) + " |")
    overall = alignment[alignment.topic == ALL]
    if len(overall):
        lines += ["", "| profile | split | 1 − JSD | 1 − W1/2 |", "|---|---|---|---|"]
        lines += [f"| {r.profile} | {r.split} | {r.jsd_alignment:.3f} | {r.w1_alignment:.3f} |" for r in overall.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def evaluate(params: Params, checkpoint: str, route: str, probes: list[Probe], judge: Any = None) -> EvalResult:
    """Score ``probes`` on ``checkpoint`` with ``route``; no files written."""
    t0 = time.perf_counter()
    samples = None
    stored = stored_likelihood_rows(params, checkpoint, probes) if route == "likelihood" else None
    if stored is not None:
        log.info("%s: using its training run's final evaluation (same weights, probes and settings)", checkpoint)
        table = stored
        vectors = value_vectors(table, params.eval.bootstrap, params.eval.ci, params.seed)
    elif route == "likelihood":
        tokenizer, model = load_policy(params, checkpoint)
        table = likelihood_rows(params, tokenizer, model, probes)
        vectors = value_vectors(table, params.eval.bootstrap, params.eval.ci, params.seed)
    else:
        tokenizer, model = load_policy(params, checkpoint)
        table, samples = paper_scorer(params, tokenizer, judge).score(model, probes, progress=True)
        vectors = value_vectors(samples, params.eval.bootstrap, params.eval.ci, params.seed)
    alignment = alignment_table(vectors, reference_profiles(params))
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
        c = params.eval.paper
        summary["paper"] = {"k": c.k, "temperature": c.temperature, "top_p": c.top_p, "max_new_tokens": c.max_new_tokens,
                            "judge": getattr(judge, "name", c.judge), "mean_label_mass": float(samples["label_mass"].mean()),
                            "mean_new_tokens": float(samples["new_tokens"].mean()), "finished_share": float(samples["finished"].mean())}
    return EvalResult(route, table, samples, vectors, alignment, summary)


def write_result(res: EvalResult, out: Path) -> list[Path]:
    """Small summaries in ``out`` (for git / dvc metrics), per-probe and per-sample tables in ``out/tables``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "tables" / "probes.jsonl", out / "vectors.csv", out / "alignment.csv", out / "table.md", out / "summary.json"]
    write_jsonl(files[0], res.probes.to_dict(orient="records"))
    if res.samples is not None:
        files.append(out / "tables" / "samples.jsonl")
        write_jsonl(files[-1], res.samples.to_dict(orient="records"))
    res.vectors.to_csv(files[1], index=False)
    res.alignment.to_csv(files[2], index=False)
    files[3].write_text(markdown_table(res.vectors, res.alignment), encoding="utf-8")
    write_json(files[4], res.summary)
    return files


@contextmanager
def fresh_run(params: Params, out: Path, run_name: str, tags: dict[str, str], run_params: dict[str, Any]) -> Iterator[Any]:
    """A new MLflow run for one evaluation (never a resumed one), tagged with provenance and ``tags``.

    The run bookkeeping files are removed afterwards (nothing to resume), unless MLflow failed during
    the run, in which case they stay for ``valuedrift relog``.
    """
    bookkeeping = RunDir(out)
    bookkeeping.run_id_file.unlink(missing_ok=True)  # no id file = a new run
    tracker = Tracker(params.tracking, out)
    with tracker.run(run_name, {**provenance_tags(), **tags}, run_params):
        yield tracker
    if tracker.failed is None:
        bookkeeping.forget_mlflow_run()


def log_to_mlflow(params: Params, res: EvalResult, out: Path, files: list[Path], run_name: str) -> str | None:
    """A new MLflow run (stage ``eval``) with the value vectors, alignment scores and the written files."""
    tags = {"stage": "eval", "algorithm": "eval", "route": res.route, "checkpoint": res.summary["checkpoint"]}
    d = to_dict(params)
    flat = flatten({"seed": d["seed"], "model": d["model"], "eval": {k: v for k, v in d["eval"].items() if k != "judges"}})
    with fresh_run(params, out, run_name, tags, flat) as tracker:
        metrics = metric_dict(res.vectors)
        for r in res.alignment.itertuples(index=False):
            metrics[f"align/{r.profile}/{r.split}/{r.topic}/jsd"] = r.jsd_alignment
            metrics[f"align/{r.profile}/{r.split}/{r.topic}/w1"] = r.w1_alignment
        metrics["eval/seconds"] = res.summary["seconds"]
        tracker.log_metrics(metrics, step=res.summary["step"])
        for f in files:
            tracker.log_artifact(f, "eval")
    return tracker.run_id


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--checkpoint", default="models/base", help="model folder (checkpoint, final model, models/base) or hub id")
    ap.add_argument("--route", choices=("likelihood", "paper"), default=None, help="default: eval.route")
    ap.add_argument("--probes", default=None, help="<kind>:<hub id or path> (default: the V-PRISM bank in --data)")
    ap.add_argument("--probes-per-topic", type=int, default=None, help="override the per-(split, topic) probe count (0 = all)")
    ap.add_argument("--judge", default=None, help="paper route: a name from eval.judges (default: eval.paper.judge)")
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default=None, help="output folder (default: evals/<checkpoint>/<route>)")
    ap.add_argument("--no-mlflow", action="store_true", help="write files only")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    route = a.route or params.eval.route
    if a.probes_per_topic is not None and a.probes_per_topic < 0:
        raise ConfigError("--probes-per-topic", "must be >= 0 (0 = all)")
    check_checkpoint(a.checkpoint)
    probes = choose_probes(params, route, a.probes, a.probes_per_topic, Path(a.data))
    profiles = reference_profiles(params)  # a bad profile file fails here, before any model loads
    judge = make_judge(params, a.judge or params.eval.paper.judge) if route == "paper" else None
    log.info("eval %s on %s: %d probes, %d reference profiles", route, a.checkpoint, len(probes), len(profiles))
    res = evaluate(params, a.checkpoint, route, probes, judge)
    name = a.checkpoint.strip("/").replace("/", "_")
    out = Path(a.out) if a.out else Path("evals") / name / route
    files = write_result(res, out)
    print(markdown_table(res.vectors[res.vectors.topic == ALL], res.alignment), end="")
    if not a.no_mlflow:
        run_id = log_to_mlflow(params, res, out, files, f"eval-{route}-{name}")
        log.info("MLflow run %s", run_id)
    log.info("wrote %s (%.1f s)", out, res.summary["seconds"])
