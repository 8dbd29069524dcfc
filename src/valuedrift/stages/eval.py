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

import logging
from pathlib import Path

import pandas as pd

from valuedrift.config.load import load_params
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import flatten, to_dict
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import write_json, write_jsonl
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.stages.args import check_flags, check_model_path, check_path, check_probes_flag, stage_parser
from valuedrift.stance.evaluation import (
    EvalResult,
    check_checkpoint,
    choose_probes,
    evaluate,
    make_judge,
    reference_profiles,
)
from valuedrift.stance.vectors import metric_dict
from valuedrift.tracking import fresh_run

log = logging.getLogger(__name__)


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


def log_to_mlflow(params: Params, res: EvalResult, out: Path, files: list[Path], run_name: str) -> str | None:
    """A new MLflow run (stage ``eval``) with the value vectors, alignment scores and the written files."""
    tags = {"stage": "eval", "algorithm": "eval", "route": res.route, "checkpoint": res.summary["checkpoint"]}
    d = to_dict(params)
    flat = flatten({"seed": d["seed"], "model": d["model"], "eval": {k: v for k, v in d["eval"].items() if k != "judges"}})
    with fresh_run(params.tracking, out, run_name, tags, flat) as tracker:
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
    ap = stage_parser("eval", __doc__, "data", raw_doc=True)
    ap.add_argument("--checkpoint", default="models/base", help="model folder (checkpoint, final model, models/base) or hub id")
    ap.add_argument("--route", choices=("likelihood", "paper"), default=None, help="default: eval.route")
    ap.add_argument("--probes", default=None, help="<kind>:<hub id or path> (default: the V-PRISM bank in --data)")
    ap.add_argument("--probes-per-topic", type=int, default=None, help="override the per-(split, topic) probe count (0 = all)")
    ap.add_argument("--judge", default=None, help="paper route: a name from eval.judges (default: eval.paper.judge)")
    ap.add_argument("--out", default=None, help="output folder (default: evals/<checkpoint>/<route>)")
    ap.add_argument("--no-mlflow", action="store_true", help="write files only")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_model_path("checkpoint", a.checkpoint)
    check_probes_flag(a.probes)
    check_flags(a, {"data": "dir"}, ["out"])
    params = load_params(a.params)
    route = a.route or params.eval.route
    if a.probes_per_topic is not None and a.probes_per_topic < 0:
        raise ConfigError("--probes-per-topic", "must be >= 0 (0 = all)")
    check_checkpoint(a.checkpoint)
    probes = choose_probes(params.eval, params.probe_seed, route, a.probes, a.probes_per_topic, Path(a.data))
    profiles = reference_profiles(params.eval.reference_profiles, params.prepare_data.corpora)  # a bad profile file fails here, before any model loads
    judge = make_judge(params.eval.judges, params.model, a.judge or params.eval.paper.judge) if route == "paper" else None
    log.info("eval %s on %s: %d probes, %d reference profiles", route, a.checkpoint, len(probes), len(profiles))
    res = evaluate(params.eval, params.model, params.prepare_data.corpora, params.seed, a.checkpoint, route, probes, judge)
    name = a.checkpoint.strip("/").replace("/", "_")
    out = Path(a.out) if a.out else Path("evals") / name / route
    files = write_result(res, out)
    print(markdown_table(res.vectors[res.vectors.topic == ALL], res.alignment), end="")
    if not a.no_mlflow:
        run_id = log_to_mlflow(params, res, out, files, f"eval-{route}-{name}")
        log.info("MLflow run %s", run_id)
    log.info("wrote %s (%.1f s)", out, res.summary["seconds"])
