"""``judge-eval``: how well each stance judge labels answers, and how well it agrees with the likelihood route.

1. **Accuracy on the labelled stance set** (``judge_eval.labelled``: free-text answers to V-PRISM questions
   with a gold stance, data/AUTHORING.md). For each judge J in ``judge_eval.judges``, the prediction is
   argmax_s p_J(s | question, answer); reported: accuracy, macro-F1 (mean of the per-stance F1), the
   confusion matrix (rows = gold, columns = predicted, order support/neutral/oppose), Cohen's κ, the mean
   log-probability of the gold stance, the mean label mass, per split, and the majority-class baseline.
2. **Agreement with the likelihood route on one checkpoint** (``--checkpoint``): on
   ``judge_eval.agreement_probes_per_topic`` probes per (split, topic), q_L(p) from the likelihood route and
   q_J(p) = mean_k p_J(·|p, y_k) from the same K sampled answers (``eval.paper``) for every judge; reported:
   share of probes where argmax q_L = argmax q_J, Cohen's κ of those argmaxes, mean over probes of
   1 − JSD(q_L(p), q_J(p)), Pearson r of (support − oppose) across probes, and both "all" value vectors.

Writes ``judge_eval.json`` (every number), ``judge_eval.md`` (tables), ``predictions.jsonl`` and
``agreement.jsonl`` to ``--out`` and mirrors them to an MLflow run (stage ``judge_eval``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from valuedrift.config.load import load_params
from valuedrift.config.schema.params import Params
from valuedrift.core.errors import DataError
from valuedrift.core.io import read_records, require, write_json, write_jsonl
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import QUESTIONS_FILE, load_probe_bank, load_questions, select_probes
from valuedrift.data.schemas import Probe
from valuedrift.metrics.agreement import classification_metrics, majority_baseline, route_agreement
from valuedrift.stages.args import check_flags, check_model_path, check_path, stage_parser
from valuedrift.stance.evaluation import (
    check_checkpoint,
    likelihood_rows,
    load_policy,
    make_judge,
    paper_scorer,
)
from valuedrift.tracking import fresh_run

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Labelled set
# --------------------------------------------------------------------------------------------------


def load_labelled(path: str | Path, questions: dict[int, Probe]) -> list[dict[str, Any]]:
    """Rows {uid, id, answer, gold} joined with their question (question, topic, split); file:line on error."""

    def parse(obj: dict[str, Any], p: Path, line: int) -> dict[str, Any]:
        uid = require(obj, "uid", str, p, line)
        qid = require(obj, "id", int, p, line)
        answer = require(obj, "answer", str, p, line)
        gold = require(obj, "gold", str, p, line)
        if gold not in STANCES:
            raise DataError(p, line, f"field 'gold' must be one of {', '.join(STANCES)}, got {gold!r}")
        if qid not in questions:
            raise DataError(p, line, f"field 'id': {qid} is not a V-PRISM question")
        extra = set(obj) - {"uid", "id", "answer", "gold"}
        if extra:
            raise DataError(p, line, f"unknown field(s) {sorted(extra)}")
        q = questions[qid]
        return {"uid": uid, "id": qid, "answer": answer, "gold": gold, "question": q.question, "topic": q.topic, "split": q.split}

    return read_records(path, parse, key="uid")


# --------------------------------------------------------------------------------------------------
# Judge accuracy (metrics: valuedrift.metrics.agreement)
# --------------------------------------------------------------------------------------------------


def judge_accuracy(judge: Any, labelled: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics of one judge on the labelled rows, overall and per split, plus per-row predictions."""
    out = judge.judge([(r["question"], r["answer"]) for r in labelled], progress=True)
    preds = [STANCES[int(i)] for i in out.probs.argmax(axis=1)]
    gold = [r["gold"] for r in labelled]
    gold_idx = np.array([STANCES.index(g) for g in gold])
    report = classification_metrics(gold, preds)
    report["mean_log_p_gold"] = float(np.mean(np.log(np.clip(out.probs[np.arange(len(gold)), gold_idx], 1e-12, None))))
    report["mean_label_mass"] = float(np.mean(out.label_mass))
    report["predicted_share"] = {s: preds.count(s) / len(preds) for s in STANCES}
    report["by_split"] = {}
    for split in sorted({r["split"] for r in labelled}):
        keep = [i for i, r in enumerate(labelled) if r["split"] == split]
        report["by_split"][split] = classification_metrics([gold[i] for i in keep], [preds[i] for i in keep])
    rows = [{"judge": judge.name, "uid": r["uid"], "gold": r["gold"], "pred": p, **{s: float(out.probs[i, j]) for j, s in enumerate(STANCES)},
             "label_mass": float(out.label_mass[i])} for i, (r, p) in enumerate(zip(labelled, preds, strict=True))]
    return report, rows


# --------------------------------------------------------------------------------------------------
# Stage
# --------------------------------------------------------------------------------------------------


def agreement(params: Params, checkpoint: str, probes: list[Probe], judges: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Likelihood route vs each judge on the same checkpoint and the same sampled answers."""
    from valuedrift.stance.paper_route import judge_samples, probe_distributions

    tokenizer, model = load_policy(params.model, checkpoint)
    q_l = likelihood_rows(params.eval, tokenizer, model, probes)
    first = next(iter(judges.values()))
    samples = paper_scorer(params.eval, params.seed, tokenizer, first).sample(model, probes, progress=True)
    del model
    result, rows = {}, []
    for name, judge in judges.items():
        judged = judge_samples(judge, probes, samples, progress=True)
        q_j = probe_distributions(judged)
        result[name] = route_agreement(q_l, q_j)
        rows += [{"judge": name, **r} for r in judged]
    return result, rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Judge evaluation ({report['labelled']['n']} labelled answers)", "",
             "| judge | accuracy | macro-F1 | κ | mean log p(gold) | label mass |", "|---|---|---|---|---|---|"]
    base = report["labelled"]["majority_baseline"]
    lines.append(f"| majority ({base['predict']}) | {base['accuracy']:.3f} | {base['macro_f1']:.3f} | 0 | | |")
    for name, r in report["judges"].items():
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['kappa']:.3f} | {r['mean_log_p_gold']:.3f} | {r['mean_label_mass']:.3g} |")
    for name, r in report["judges"].items():
        lines += ["", f"Confusion matrix of {name} (rows gold, columns predicted):", "", "| gold \\ pred | " + " | ".join(STANCES) + " |", "|---|---|---|---|"]
        lines += [f"| {s} | " + " | ".join(map(str, row)) + " |" for s, row in zip(STANCES, r["confusion"]["matrix"], strict=True)]
    if report.get("agreement"):
        lines += ["", f"## Agreement with the likelihood route on {report['checkpoint']}", "",
                  "| judge | probes | argmax agreement | κ | mean 1 − JSD | Pearson r (support − oppose) |", "|---|---|---|---|---|---|"]
        for name, a in report["agreement"].items():
            lines.append(f"| {name} | {a['n_probes']} | {a['argmax_agreement']:.3f} | {a['argmax_kappa']:.3f} | {a['mean_jsd_alignment']:.3f} | {a['pearson_support_minus_oppose']:.3f} |")
    return "\n".join(lines) + "\n"


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, r in report["judges"].items():
        for k in ("accuracy", "macro_f1", "kappa", "mean_log_p_gold", "mean_label_mass"):
            out[f"judge/{name}/{k}"] = r[k]
    for name, a in (report.get("agreement") or {}).items():
        for k in ("argmax_agreement", "argmax_kappa", "mean_jsd_alignment", "pearson_support_minus_oppose"):
            out[f"agreement/{name}/{k}"] = a[k]
    return {k: float(v) for k, v in out.items() if v == v}  # drop NaN


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("judge-eval", __doc__, "data", raw_doc=True)
    ap.add_argument("--checkpoint", default="models/base", help="checkpoint for the route agreement (folder or hub id)")
    ap.add_argument("--judges", nargs="+", default=None, help="names from eval.judges (default: judge_eval.judges)")
    ap.add_argument("--out", default="metrics/judge_eval")
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_flags(a, {"data": "dir"}, ["out"])
    params = load_params(a.params)
    cfg = params.judge_eval
    data = Path(a.data)
    questions = {q.id: q for q in load_questions(data / QUESTIONS_FILE)}
    labelled = load_labelled(cfg.labelled, questions)
    names = a.judges or cfg.judges
    if cfg.agreement_probes_per_topic:
        check_model_path("checkpoint", a.checkpoint)
    probes = select_probes(load_probe_bank(data), cfg.agreement_probes_per_topic, params.eval.splits, params.probe_seed) if cfg.agreement_probes_per_topic else []
    if probes:
        check_checkpoint(a.checkpoint)
    judges = {n: make_judge(params.eval.judges, params.model, n) for n in names}  # bad judge settings fail here, before scoring
    t0 = time.perf_counter()
    report: dict[str, Any] = {"labelled": {"file": cfg.labelled, "n": len(labelled),
                                           "gold_share": {s: sum(r["gold"] == s for r in labelled) / len(labelled) for s in STANCES},
                                           "by_split": {s: sum(r["split"] == s for r in labelled) for s in ("dev", "test")},
                                           "majority_baseline": majority_baseline(labelled)},
                              "judges": {}, "checkpoint": a.checkpoint}
    predictions = []
    for name, judge in judges.items():
        report["judges"][name], rows = judge_accuracy(judge, labelled)
        predictions += rows
        log.info("judge %s: accuracy %.3f, macro-F1 %.3f", name, report["judges"][name]["accuracy"], report["judges"][name]["macro_f1"])
    agreement_rows: list[dict[str, Any]] = []
    if probes:
        report["agreement"], agreement_rows = agreement(params, a.checkpoint, probes, judges)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(a.out)
    write_json(out / "judge_eval.json", report)
    (out / "judge_eval.md").write_text(markdown(report), encoding="utf-8")
    write_jsonl(out / "predictions.jsonl", predictions)
    files = [out / "judge_eval.json", out / "judge_eval.md", out / "predictions.jsonl"]
    if agreement_rows:
        write_jsonl(out / "agreement.jsonl", agreement_rows)
        files.append(out / "agreement.jsonl")
    print(markdown(report), end="")
    if not a.no_mlflow:
        tags = {"stage": "judge_eval", "algorithm": "judge_eval", "checkpoint": a.checkpoint}
        run_params = {"judges": ",".join(names), "labelled": cfg.labelled, "n_labelled": len(labelled)}
        with fresh_run(params.tracking, out, "judge-eval", tags, run_params) as tracker:
            tracker.log_metrics(flat_metrics(report), step=0)
            for f in files:
                tracker.log_artifact(f, "judge_eval")
