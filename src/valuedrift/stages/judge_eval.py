"""``judge-eval``: how well each stance judge labels answers, and how well it agrees with the likelihood route.

1. **Accuracy on labelled answers.** For each judge J in ``judge_eval.judges`` the prediction is
   argmax_s p_J(s | question, answer), scored against the gold stance on these evaluation sets:

   - ``generations_test``: the **held-out-topic real generations** — test-split rows of the labelled
     sampled answers in ``judge_eval.generations`` (data/labelled_generations: answers.jsonl, key.jsonl,
     labels.jsonl; data/AUTHORING.md); ``generations_dev``: their dev-split rows, reported apart because
     they are training material of the classifier judge (``judge_train.sources``); each also restricted to
     the unflagged answers (labeller flag null: ``generations_test_unflagged``, ``generations_dev_unflagged``).
     Skipped, with a logged note, when ``judge_eval.generations`` is null.
   - ``labelled``: the hand-written labelled stance set (``judge_eval.labelled``), and its ``labelled_dev``
     / ``labelled_test`` splits.

   Reported per (judge, set): accuracy, macro-F1 (mean of the per-stance F1), Cohen's κ, the mean
   log-probability of the gold stance and the mean label mass, each with a percentile bootstrap CI
   (``eval.bootstrap`` resamples, level ``eval.ci``, seed ``seed``; the same resamples for every judge of a
   set), the per-stance precision/recall/F1 and the confusion matrix (rows = gold, columns = predicted,
   order support/neutral/oppose); per set, the majority-class baseline with its CI. The generations sets
   resample question ids (a cluster bootstrap: several answers, from several checkpoints, share a
   question); the labelled sets resample answers. Formulas: valuedrift.metrics.agreement.
   If the generations folder holds ``labels_pass2.jsonl`` (a second labelling pass over a subset), the
   labeller's reliability is reported too: Cohen's κ between the passes with its CI, raw agreement, n.
2. **Agreement with the likelihood route on one checkpoint** (``--checkpoint``): on
   ``judge_eval.agreement_probes_per_topic`` probes per (split, topic), q_L(p) from the likelihood route and
   q_J(p) = mean_k p_J(·|p, y_k) from the same K sampled answers (``eval.paper``) for every judge; reported:
   share of probes where argmax q_L = argmax q_J, Cohen's κ of those argmaxes, mean over probes of
   1 − JSD(q_L(p), q_J(p)), Pearson r of (support − oppose) across probes, and both "all" value vectors.

Writes ``judge_eval.json`` (every number), ``judge_eval.md`` (tables), ``predictions.jsonl`` (one row per
judge and answer, with its ``set``) and ``agreement.jsonl`` to ``--out`` and mirrors them to an MLflow run
(stage ``judge_eval``; metrics ``judge/<judge>/<set>/<metric>`` with ``_lo`` / ``_hi``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from valuedrift.config.load import load_params
from valuedrift.config.path_checks import path_problem
from valuedrift.config.schema.params import Params
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import read_records, require, write_json, write_jsonl
from valuedrift.core.paths import BASE_MODEL
from valuedrift.core.vocab import STANCES
from valuedrift.data.labelled_generations import LABELS, LABELS_PASS2, load_labelled_generations, read_labels
from valuedrift.data.probes import QUESTIONS_FILE, load_probe_bank, load_questions, select_probes
from valuedrift.data.schemas import Probe
from valuedrift.metrics.agreement import (
    BOOT_METRICS,
    bootstrap_classification,
    majority_baseline,
    pass_agreement,
    route_agreement,
)
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

MEANS: tuple[str, ...] = ("mean_log_p_gold", "mean_label_mass")
"""Per-answer means reported with a CI next to BOOT_METRICS."""
GENERATION_SPLITS: dict[str, str] = {
    "test": "held-out-topic real generations (test split)",
    "dev": "dev (training material of the classifier judge)",
}
NO_GENERATIONS = "judge_eval.generations is null: the real-generations sets are skipped."


class Boot(NamedTuple):
    """Bootstrap settings: ``n`` resamples (``eval.bootstrap``), level ``ci`` (``eval.ci``), ``seed``."""

    n: int
    ci: float
    seed: int


# --------------------------------------------------------------------------------------------------
# Evaluation sets
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


def labelled_pool(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`load_labelled` as pool rows {item, id, question, answer, gold, split, topic, flag}."""
    return [{"item": r["uid"], "id": r["id"], "question": r["question"], "answer": r["answer"], "gold": r["gold"],
             "split": r["split"], "topic": r["topic"], "flag": None} for r in rows]


def generations_pool(folder: str | None) -> list[dict[str, Any]] | None:
    """Pool rows (as :func:`labelled_pool`, plus ``checkpoint``) of the labelled generations in ``folder``
    (``judge_eval.generations``); None when it is null. A folder that cannot be read is a ConfigError
    naming the key; a bad record a DataError naming file:line."""
    if folder is None:
        log.info(NO_GENERATIONS)
        return None
    problem = path_problem(folder, "dir")
    if problem:
        raise ConfigError("judge_eval.generations", problem)
    return [{"item": g.aid, "id": g.id, "question": g.question, "answer": g.answer, "gold": g.gold, "split": g.split,
             "topic": g.topic, "flag": g.flag, "checkpoint": g.checkpoint} for g in load_labelled_generations(folder)]


def inter_pass(folder: str | None, boot: Boot) -> dict[str, Any] | None:
    """The labeller's reliability: :func:`pass_agreement` of labels.jsonl and labels_pass2.jsonl in
    ``folder``, or None without a second pass. A second-pass aid without a first-pass label is a DataError."""
    if folder is None or not (Path(folder) / LABELS_PASS2).is_file():
        return None
    first, second = read_labels(Path(folder) / LABELS), read_labels(Path(folder) / LABELS_PASS2)
    unknown = sorted(set(second) - set(first))
    if unknown:
        raise DataError(Path(folder) / LABELS_PASS2, None, f"{len(unknown)} aid(s) not labelled in {LABELS}, e.g. {unknown[0]}")
    return {"file": str(Path(folder) / LABELS_PASS2), **pass_agreement(first, second, boot.n, boot.ci, boot.seed)}


@dataclass(frozen=True)
class EvalSet:
    """Rows ``index`` of pool ``pool``, resampled by question id when ``grouped`` (cluster bootstrap)."""

    name: str
    description: str
    pool: str
    index: tuple[int, ...]
    grouped: bool


def eval_sets(pools: dict[str, list[dict[str, Any]]]) -> list[EvalSet]:
    """The evaluation sets of the module docstring over the pools ``generations`` (optional) and
    ``labelled``; empty ones are left out (logged)."""
    sets = []
    gens = pools.get("generations") or []
    for split, what in GENERATION_SPLITS.items():
        idx = tuple(i for i, r in enumerate(gens) if r["split"] == split)
        sets.append(EvalSet(f"generations_{split}", what, "generations", idx, True))
        sets.append(EvalSet(f"generations_{split}_unflagged", f"{what}, unflagged answers (flag null)", "generations",
                            tuple(i for i in idx if gens[i]["flag"] is None), True))
    lab = pools["labelled"]
    sets.append(EvalSet("labelled", "hand-written labelled set", "labelled", tuple(range(len(lab))), False))
    for split in ("dev", "test"):
        sets.append(EvalSet(f"labelled_{split}", f"hand-written labelled set, {split} split", "labelled",
                            tuple(i for i, r in enumerate(lab) if r["split"] == split), False))
    for s in sets:
        if not s.index:
            log.info("judge-eval: set %s (%s) has no rows; skipped", s.name, s.description)
    return [s for s in sets if s.index]


def base_set(pool: str, row: dict[str, Any]) -> str:
    """The ``set`` column of predictions.jsonl: generations_<split> or labelled."""
    return f"generations_{row['split']}" if pool == "generations" else pool


def set_info(es: EvalSet, rows: list[dict[str, Any]], source: str | None, boot: Boot) -> dict[str, Any]:
    """Size, composition and majority baseline (with its CI) of one evaluation set."""
    sub = [rows[i] for i in es.index]
    gold = [r["gold"] for r in sub]
    groups = [r["id"] for r in sub] if es.grouped else None
    base = majority_baseline(sub)
    base_boot = bootstrap_classification(gold, [base["predict"]] * len(gold), boot.n, boot.ci, boot.seed, groups)
    info: dict[str, Any] = {
        "description": es.description, "source": source, "n": len(sub), "n_questions": len({r["id"] for r in sub}),
        "resample": "question ids (cluster bootstrap)" if es.grouped else "answers",
        "topics": sorted({r["topic"] for r in sub}), "gold_share": {s: gold.count(s) / len(gold) for s in STANCES},
        "majority_baseline": {"predict": base["predict"], **{k: base_boot[k] for k in BOOT_METRICS}},
    }
    if es.pool == "generations":
        info["flags"] = dict(Counter(r["flag"] or "none" for r in sub))
        info["checkpoints"] = dict(Counter(r["checkpoint"] for r in sub))
    return info


# --------------------------------------------------------------------------------------------------
# Judge accuracy (metrics: valuedrift.metrics.agreement)
# --------------------------------------------------------------------------------------------------


def judge_set(probs: np.ndarray, label_mass: np.ndarray, rows: list[dict[str, Any]], es: EvalSet, boot: Boot) -> dict[str, Any]:
    """Metrics with bootstrap CIs (:func:`bootstrap_classification`) of one judge's p_J on one set.

    pred_i = argmax_s p_J(s | i); mean_log_p_gold = mean_i log max(p_J(gold_i | i), 1e-12);
    mean_label_mass = mean_i label mass; predicted_share_s = #{i : pred_i = s} / n.
    """
    idx = np.array(es.index)
    gold = [rows[i]["gold"] for i in idx]
    pred = [STANCES[int(j)] for j in probs[idx].argmax(axis=1)]
    p_gold = probs[idx, [STANCES.index(g) for g in gold]]
    means = {"mean_log_p_gold": np.log(np.clip(p_gold, 1e-12, None)), "mean_label_mass": label_mass[idx]}
    groups = [rows[i]["id"] for i in idx] if es.grouped else None
    report = bootstrap_classification(gold, pred, boot.n, boot.ci, boot.seed, groups, means)
    report["predicted_share"] = {s: pred.count(s) / len(pred) for s in STANCES}
    return report


def judge_accuracy(judge: Any, pools: dict[str, list[dict[str, Any]]], sets: list[EvalSet], boot: Boot) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One judge: each pool judged once, then :func:`judge_set` per set; plus per-answer prediction rows."""
    report: dict[str, Any] = {}
    predictions = []
    for pool, rows in pools.items():
        out = judge.judge([(r["question"], r["answer"]) for r in rows], progress=True)
        probs, mass = np.asarray(out.probs, dtype=np.float64), np.asarray(out.label_mass, dtype=np.float64)
        for es in sets:
            if es.pool == pool:
                report[es.name] = judge_set(probs, mass, rows, es, boot)
                log.info("judge %s on %s: accuracy %.3f, macro-F1 %.3f", judge.name, es.name,
                         report[es.name]["accuracy"]["value"], report[es.name]["macro_f1"]["value"])
        keep = ("item", "id", "split", "topic", "flag", "checkpoint")
        predictions += [{"judge": judge.name, "set": base_set(pool, r), **{k: r[k] for k in keep if k in r}, "gold": r["gold"],
                         "pred": STANCES[int(probs[i].argmax())], **{s: float(probs[i, j]) for j, s in enumerate(STANCES)},
                         "label_mass": float(mass[i])} for i, r in enumerate(rows)]
    return report, predictions


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


def fmt_ci(d: dict[str, float]) -> str:
    """``value [lo, hi]`` to 3 decimals."""
    return f"{d['value']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    b = report["bootstrap"]
    lines = ["# Judge evaluation", "",
             f"Point estimates with {b['ci']:.0%} percentile bootstrap intervals ({b['n']} resamples, seed {b['seed']}); "
             "the generations sets resample question ids, the labelled sets resample answers."]
    if report["generations"]["note"]:
        lines += ["", report["generations"]["note"]]
    for set_name, info in report["sets"].items():
        lines += ["", f"## {set_name}: {info['description']} ({info['n']} answers, {info['n_questions']} questions)", "",
                  "| judge | accuracy | macro-F1 | κ | mean log p(gold) | label mass |", "|---|---|---|---|---|---|"]
        base = info["majority_baseline"]
        lines.append(f"| majority ({base['predict']}) | " + " | ".join(fmt_ci(base[k]) for k in BOOT_METRICS) + " | | |")
        for name, per_set in report["judges"].items():
            r = per_set[set_name]
            lines.append(f"| {name} | " + " | ".join(fmt_ci(r[k]) for k in (*BOOT_METRICS, "mean_log_p_gold")) +
                         f" | {r['mean_label_mass']['value']:.3g} |")
        lines += ["", "Confusion matrices (rows gold, columns predicted):", "", "| judge | gold \\ pred | " + " | ".join(STANCES) + " |",
                  "|---|---|---|---|---|"]
        for name, per_set in report["judges"].items():
            m = per_set[set_name]["confusion"]["matrix"]
            lines += [f"| {name} | {s} | " + " | ".join(map(str, row)) + " |" for s, row in zip(STANCES, m, strict=True)]
    if report.get("inter_pass"):
        ip = report["inter_pass"]
        lines += ["", "## Labeller reliability (second labelling pass)", "",
                  "| answers in both passes | κ | raw agreement | flag agreement |", "|---|---|---|---|",
                  f"| {ip['n']} | {fmt_ci(ip['kappa'])} | {fmt_ci(ip['raw_agreement'])} | {ip['flag_agreement']:.3f} |"]
    if report.get("agreement"):
        lines += ["", f"## Agreement with the likelihood route on {report['checkpoint']}", "",
                  "| judge | probes | argmax agreement | κ | mean 1 − JSD | Pearson r (support − oppose) |", "|---|---|---|---|---|---|"]
        for name, a in report["agreement"].items():
            lines.append(f"| {name} | {a['n_probes']} | {a['argmax_agreement']:.3f} | {a['argmax_kappa']:.3f} | {a['mean_jsd_alignment']:.3f} | {a['pearson_support_minus_oppose']:.3f} |")
    return "\n".join(lines) + "\n"


def _with_ci(prefix: str, d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """``prefix/k``, ``prefix/k_lo``, ``prefix/k_hi`` for each {"value", "lo", "hi"} entry ``k`` of ``d``."""
    out = {}
    for k in keys:
        out |= {f"{prefix}/{k}": d[k]["value"], f"{prefix}/{k}_lo": d[k]["lo"], f"{prefix}/{k}_hi": d[k]["hi"]}
    return out


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: judge/<judge>/<set>/<metric>[_lo|_hi], baseline/<set>/…, labeller/…, agreement/<judge>/…"""
    out: dict[str, Any] = {}
    for name, per_set in report["judges"].items():
        for set_name, r in per_set.items():
            out |= _with_ci(f"judge/{name}/{set_name}", r, (*BOOT_METRICS, *MEANS))
    for set_name, info in report["sets"].items():
        out |= _with_ci(f"baseline/{set_name}", info["majority_baseline"], BOOT_METRICS)
    if report.get("inter_pass"):
        ip = report["inter_pass"]
        out |= _with_ci("labeller", ip, ("kappa", "raw_agreement"))
        out |= {"labeller/n": ip["n"], "labeller/flag_agreement": ip["flag_agreement"]}
    for name, a in (report.get("agreement") or {}).items():
        for k in ("argmax_agreement", "argmax_kappa", "mean_jsd_alignment", "pearson_support_minus_oppose"):
            out[f"agreement/{name}/{k}"] = a[k]
    return {k: float(v) for k, v in out.items() if v == v}  # drop NaN


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("judge-eval", __doc__, "data", raw_doc=True)
    ap.add_argument("--checkpoint", default=None, help=f"checkpoint for the route agreement (folder or hub id; default {BASE_MODEL})")
    ap.add_argument("--judges", nargs="+", default=None, help="names from eval.judges (default: judge_eval.judges)")
    ap.add_argument("--out", default="metrics/judge_eval")
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_flags(a, {"data": "dir"}, ["out"])
    params = load_params(a.params)
    cfg = params.judge_eval
    boot = Boot(params.eval.bootstrap, params.eval.ci, params.seed)
    data = Path(a.data)
    questions = {q.id: q for q in load_questions(data / QUESTIONS_FILE)}
    labelled = load_labelled(cfg.labelled, questions)
    names = a.judges or cfg.judges
    checkpoint = a.checkpoint or str(BASE_MODEL)
    if a.checkpoint or cfg.agreement_probes_per_topic:  # a checkpoint named on the command line is checked even when unused
        check_model_path("checkpoint", checkpoint)
    pools = {"generations": generations_pool(cfg.generations), "labelled": labelled_pool(labelled)}
    pools = {k: v for k, v in pools.items() if v is not None}
    reliability = inter_pass(cfg.generations, boot)
    sets = eval_sets(pools)
    sources = {"generations": cfg.generations, "labelled": cfg.labelled}
    probes = select_probes(load_probe_bank(data), cfg.agreement_probes_per_topic, params.eval.splits, params.probe_seed) if cfg.agreement_probes_per_topic else []
    if probes:
        check_checkpoint(checkpoint)
    judges = {n: make_judge(params.eval.judges, params.model, n) for n in names}  # bad judge settings fail here, before scoring
    t0 = time.perf_counter()
    note = NO_GENERATIONS if cfg.generations is None else None
    report: dict[str, Any] = {
        "bootstrap": boot._asdict(),
        "generations": {"folder": cfg.generations, "n": len(pools.get("generations", [])), "note": note},
        "labelled": {"file": cfg.labelled, "n": len(labelled)},
        "sets": {s.name: set_info(s, pools[s.pool], sources[s.pool], boot) for s in sets},
        "inter_pass": reliability,
        "judges": {},
        "checkpoint": checkpoint,
    }
    predictions = []
    for name, judge in judges.items():
        report["judges"][name], rows = judge_accuracy(judge, pools, sets, boot)
        predictions += rows
    agreement_rows: list[dict[str, Any]] = []
    if probes:
        report["agreement"], agreement_rows = agreement(params, checkpoint, probes, judges)
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
        tags = {"stage": "judge_eval", "algorithm": "judge_eval", "checkpoint": checkpoint}
        run_params = {"judges": ",".join(names), "labelled": cfg.labelled, "n_labelled": len(labelled),
                      "generations": str(cfg.generations), "n_generations": report["generations"]["n"],
                      "bootstrap": boot.n, "ci": boot.ci}
        with fresh_run(params.tracking, out, "judge-eval", tags, run_params) as tracker:
            tracker.log_metrics(flat_metrics(report), step=0)
            for f in files:
                tracker.log_artifact(f, "judge_eval")
