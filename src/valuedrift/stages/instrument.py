"""``instrument``: is the stance instrument measuring what the models say? (issue 14; docs/definitions.md)

1. **Route validity** on the labelled real generations (``judge_eval.generations``): the likelihood route
   (``likelihood.jsonl``, same checkpoints and probes) against the hand labels and against every judge's
   predictions (``judge_eval``'s ``predictions.jsonl``): per-probe correlation of (support − oppose),
   per-topic profile agreement, and agreement of the *change* from the ``base`` checkpoint to each other one
   (per topic and stance, with CIs); τ fitted on base's dev topics, reported on held-out topics and
   checkpoints (:mod:`valuedrift.reporting.instrument`).
2. **The quick judged route at the phase ends** of this pipeline's runs (``eval.quick``: K short answers per
   trace probe, judged by ``eval.quick.judge``): the judged drift of every run from its start to its final
   checkpoint next to the likelihood route's drift on the same probes, and the seconds per checkpoint.

3. **What the quick route gives up**: its judge on the first ``eval.quick.max_new_tokens`` tokens of each
   held-out-topic labelled answer, and on the whole answer, against the hand labels (``quick_fidelity.json``).

Writes ``route_validity.json``, ``route_changes.csv``, ``phase_ends.csv``, ``phase_end_samples.jsonl``,
``quick_fidelity.json`` and ``summary.json`` to ``--out`` and ``instrument_*.png`` to ``--plots``; mirrors them to an MLflow run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.core.errors import ConfigError
from valuedrift.core.io import iter_jsonl, write_json, write_jsonl
from valuedrift.core.paths import METRICS
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.reporting import instrument as inst
from valuedrift.reporting.instrument_figures import plot_phase_ends, plot_route_changes
from valuedrift.stages.args import check_flags, parse, stage_parser
from valuedrift.stance.evaluation import load_policy, make_judge
from valuedrift.tracking import fresh_run

log = logging.getLogger(__name__)
START = "base"


def load_predictions(path: Path) -> pd.DataFrame | None:
    """The judges' predictions on the labelled generations (rows of sets generations_*)."""
    if not path.is_file():
        return None
    df = pd.DataFrame([o for _, o in iter_jsonl(path)])
    if df.empty or "set" not in df:
        return None
    return df[df["set"].str.startswith("generations")].drop_duplicates(["judge", "item"]).rename(columns={"item": "uid"})


def stored_judged_ends(params: Any, run_path: Path, probe_ids: set[int]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """A run's judged route at its first and last checkpoint as the run traced it (``<run>/judged``,
    ``eval.trace_judged``), when it has both with the ``eval.quick`` settings on ``probe_ids``; else None."""
    from valuedrift.core.rundir import JUDGED_DIR, RunDir
    from valuedrift.stance.paper_route import judged_signature

    ev = params.eval
    expected = judged_signature(ev.quick, ev.quick.judge, params.probe_seed, ev.prompt_format, ev.system_prompt)
    run = RunDir(run_path / JUDGED_DIR)
    if run.trajectory().get("scorer") != expected or len([c for c in run.checkpoint_records() if c["phase"]]) < 2:
        return None
    ends = inst.route_ends(run.path, probe_ids)
    return ends if all(set(t.probe_id) == probe_ids for t in ends) else None


def explode_samples(table: pd.DataFrame, checkpoint: str) -> list[dict[str, Any]]:
    """Per-sample rows (answers with p_J) of a judged evaluation table."""
    return [{"checkpoint": checkpoint, "probe_id": r.probe_id, "topic": r.topic, "split": r.split, **smp}
            for r in table.itertuples() for smp in r.samples]


def quick_phase_ends(params: Any, data: Path, runs: Path, base_model: Path, judge: Any) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The judged route (``eval.quick``) at every phase-end checkpoint, and per-run judged and likelihood
    drift on the same probes: read from a run's own judged trace where it has one
    (:func:`stored_judged_ends`), otherwise sampled here once per checkpoint and labelled with ``judge``.
    Returns (drift rows, per-sample rows, seconds per sampled checkpoint)."""
    from valuedrift.stance.paper_route import judge_samples
    from valuedrift.stance.sampling import generate_samples

    ev, q = params.eval, params.eval.quick
    ends = inst.phase_end_checkpoints(runs, base_model, params.po.start_from)
    if not ends:
        raise ConfigError("--runs", f"{runs}: no finished run (run the sft and po stages first)")
    probes = select_probes(load_probe_bank(data), q.probes_per_topic, ev.splits, params.probe_seed)
    ids = {p.id for p in probes}
    tables: dict[str, pd.DataFrame] = {}  # checkpoint name -> judged per-probe table
    pairs: dict[str, tuple[str, str]] = {}  # phase -> (start checkpoint name, end checkpoint name)
    samples: list[dict[str, Any]] = []
    to_sample: dict[str, Path] = {}
    for phase, (start, final, start_name) in ends.items():
        pairs[phase] = (start_name, phase)
        stored = stored_judged_ends(params, runs / phase, ids)
        if stored is not None:
            for name, table in zip(pairs[phase], stored, strict=True):
                if name not in tables:
                    tables[name] = table
                    samples += explode_samples(table, name)
        else:
            to_sample.setdefault(start_name, start)
            to_sample[phase] = final
    seconds = {}
    for name, path in to_sample.items():
        if name in tables:
            continue
        t0 = time.perf_counter()
        tokenizer, model = load_policy(params.model, str(path))
        drawn = generate_samples(model, tokenizer, probes, k=q.k, temperature=q.temperature, top_p=q.top_p,
                                 max_new_tokens=q.max_new_tokens, batch_size=q.batch_size, seed=params.probe_seed,
                                 prompt_format=ev.prompt_format, system_prompt=ev.system_prompt, progress=True)
        del model
        rows = [{"checkpoint": name, **r} for r in judge_samples(judge, probes, drawn)]
        samples += rows
        tables[name] = pd.DataFrame(rows).groupby(["probe_id", "topic", "split"], sort=True)[list(STANCES)].mean().reset_index()
        seconds[name] = round(time.perf_counter() - t0, 1)
        log.info("quick judged route on %s: %.1f s for %d probes × %d answers", name, seconds[name], len(probes), q.k)
    log.info("quick judged route: %d checkpoints read from the runs' judged traces, %d sampled", len(tables) - len(seconds), len(seconds))
    rows_out: list[dict[str, Any]] = []
    for phase, (a, b) in pairs.items():
        j0, j1 = (tables[n].sort_values("probe_id").reset_index(drop=True)[["probe_id", "topic", "split", *STANCES]] for n in (a, b))
        rows_out += inst.phase_drift_rows(phase, f"judged ({q.judge})", j0, j1, ev.bootstrap, ev.ci, params.seed)
        rows_out += inst.phase_drift_rows(phase, "likelihood", *inst.route_ends(runs / phase, ids), ev.bootstrap, ev.ci, params.seed)
    return pd.DataFrame(rows_out), pd.DataFrame(samples), seconds


def prefix_fidelity(params: Any, folder: Path, base_model: Path, judge: Any) -> dict[str, Any]:
    """What the quick route gives up: on the held-out-topic labelled generations, the quick judge on each
    answer's first ``eval.quick.max_new_tokens`` tokens (what the quick route would have sampled) and on the
    whole answer (≤ 128 tokens), each against the hand labels of the whole answer; bootstrap CIs over
    questions."""
    from valuedrift.data.labelled_generations import load_labelled_generations
    from valuedrift.metrics.agreement import bootstrap_classification
    from valuedrift.models import load_tokenizer

    ev, q = params.eval, params.eval.quick
    rows = [g for g in load_labelled_generations(folder) if g.split == "test"]
    tokenizer = load_tokenizer(str(base_model))
    prefixes = [tokenizer.decode(tokenizer(g.answer, add_special_tokens=False)["input_ids"][: q.max_new_tokens]) for g in rows]
    gold, groups = [g.gold for g in rows], [g.id for g in rows]
    out: dict[str, Any] = {"judge": q.judge, "max_new_tokens": q.max_new_tokens, "n": len(rows)}
    for name, texts in (("whole_answer", [g.answer for g in rows]), ("prefix", prefixes)):
        probs = judge.judge([(g.question, t) for g, t in zip(rows, texts, strict=True)]).probs
        pred = [STANCES[int(i)] for i in probs.argmax(axis=1)]
        out[name] = bootstrap_classification(gold, pred, ev.bootstrap, ev.ci, params.seed, groups=groups)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("instrument", __doc__, "data", "runs", "base-model", "plots", raw_doc=True)
    ap.add_argument("--judge-eval", default=str(METRICS / "judge_eval"), help="judge-eval output folder (its predictions.jsonl)")
    ap.add_argument("--out", default=str(METRICS / "instrument"), help="output folder (default: metrics/instrument)")
    ap.add_argument("--no-phase-ends", action="store_true", help="only the route-validity study (no model is loaded)")
    ap.add_argument("--no-mlflow", action="store_true")
    a, params = parse(ap, argv)
    check_flags(a, {"data": "dir", "judge-eval": "dir", **({} if a.no_phase_ends else {"runs": "dir", "base-model": "dir"})},
                ["out", "plots"])
    if params.judge_eval.generations is None:
        raise ConfigError("judge_eval.generations", "the route-validity study needs the labelled generations (it is null)")
    folder, out, plots = Path(params.judge_eval.generations), Path(a.out), Path(a.plots)
    ev = params.eval
    report, changes = inst.study(folder, load_predictions(Path(a.judge_eval) / "predictions.jsonl"), START, ev.bootstrap, ev.ci, params.seed)
    write_json(out / "route_validity.json", report)
    changes.to_csv(out / "route_changes.csv", index=False)
    files = [out / "route_validity.json", out / "route_changes.csv", plot_route_changes(changes, plots / "instrument_route_changes.png")]
    summary: dict[str, Any] = {"tau_fit": {k: report["tau_fit"][k]["tau"] for k in ("tau", "tau_offsets")},
                               "improves_held_out": report["tau_fit"]["improves_held_out"], "adopt": report["tau_fit"]["adopt"]}
    if not a.no_phase_ends:
        judge = make_judge(ev.judges, params.model, ev.quick.judge)  # one judge for the phase ends and the fidelity check
        drift, samples, seconds = quick_phase_ends(params, Path(a.data), Path(a.runs), Path(a.base_model), judge)
        drift.to_csv(out / "phase_ends.csv", index=False)
        write_jsonl(out / "phase_end_samples.jsonl", samples.to_dict(orient="records"))
        files += [out / "phase_ends.csv", out / "phase_end_samples.jsonl", plot_phase_ends(drift, plots / "instrument_phase_ends.png")]
        summary["quick_seconds_per_checkpoint"] = seconds  # empty when read from the runs' judged traces
        summary["quick_source"] = "sampled" if seconds else "traced"
        fidelity = prefix_fidelity(params, folder, Path(a.base_model), judge)
        write_json(out / "quick_fidelity.json", fidelity)
        files.append(out / "quick_fidelity.json")
        summary["quick_fidelity_macro_f1"] = {k: fidelity[k]["macro_f1"]["value"] for k in ("whole_answer", "prefix")}
    write_json(out / "summary.json", summary)
    files.append(out / "summary.json")
    print(f"route validity: {report['labelled']['answers']} labelled answers; τ fit {summary['tau_fit']}; -> {out}")
    if not a.no_mlflow:
        with fresh_run(params.tracking, out, "instrument", {"stage": "instrument"}, {"labelled": str(folder)}) as tracker:
            hand = report["readouts"][inst.HAND]["tau_1"]["changes"]
            tracker.log_metrics({f"route/hand/{c}/{k}": float(v) for c, d in hand.items() for k, v in d["by_topic"].items()
                                 if isinstance(v, (int, float)) and v == v}, step=0)
            for f in files:
                tracker.log_artifact(f, "instrument")
