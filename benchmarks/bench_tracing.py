"""Tracing overhead per checkpoint, excluding the stance evaluation itself, and the share of training time
spent evaluating.

1. **Per-checkpoint overhead.** A real :class:`~valuedrift.train.tracing.StanceTracer` with a real
   :class:`~valuedrift.tracking.Tracker` on a fresh SQLite MLflow store runs the default checkpoint
   sequence of one SFT run and one preference run (from params.yaml: phase checkpoints at the first and
   last step, trace checkpoints every ``eval_every`` steps). Its scorer replays per-probe rows (random
   stance distributions of the real probe bank's ids and topics) instead of running a model, so what is
   timed is everything a checkpoint costs besides scoring:

   - ``mlflow``: ``StanceTracer._mirror`` — metrics at the step, the per-probe table and the trajectory
     as artifacts (the goal: ≤ 1 s);
   - ``bookkeeping``: value vectors with their bootstrap CIs, the JSONL table and trajectory on disk.

   Also timed: one ``train/…`` log call (``TrainLogCallback.on_log``, made at every logging step).

2. **Evaluation share.** For every finished run in an MLflow store (``--runs-uri``) that logged
   ``time/eval_seconds`` (the tracer's scoring time): share = eval_seconds / the run's wall time in
   MLflow (end − start). With ``--scoring-json`` also an estimate for the params.yaml cadence.

Run: ``.venv/bin/python benchmarks/bench_tracing.py [--runs-uri sqlite:///mlflow.db]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from valuedrift.config.load import load_params
from valuedrift.config.schema.models import TrackingConfig
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.data.schemas import Probe
from valuedrift.train.tracing import StanceTracer, TrainLogCallback


class ReplayScorer:
    """Stands in for LikelihoodScorer: rows of the real shape (q and ℓ per stance), no model involved."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def score(self, model: Any, probes: list[Probe], progress: bool = False) -> list[dict[str, Any]]:
        q = self.rng.dirichlet(np.ones(len(STANCES)), size=len(probes))
        rows = []
        for p, qp in zip(probes, q, strict=True):
            row: dict[str, Any] = {"probe_id": p.id, "topic": p.topic, "split": p.split}
            for s, v in zip(STANCES, qp, strict=True):
                row[s] = float(v)
                row[f"ll_{s}"] = float(np.log(v) - 2.0)
            rows.append(row)
        return rows


class TimedTracer(StanceTracer):
    """Records how long each MLflow mirror took."""

    mirror_seconds: list[float]

    def _mirror(self, record: dict[str, Any], table_path: Path) -> None:
        t = time.perf_counter()
        super()._mirror(record, table_path)
        self.mirror_seconds.append(time.perf_counter() - t)


def checkpoint_steps(max_steps: int, every: int) -> list[tuple[int, bool]]:
    """(step, phase) as StanceTraceCallback schedules them: 0 (phase), every ``every`` steps, the end (phase)."""
    steps = [(0, True)] + [(s, False) for s in range(every, max_steps, every)] + [(max_steps, True)]
    return steps


def time_run(name: str, steps: list[tuple[int, bool]], trace: list[Probe], phase: list[Probe], params: Any, uri: str, root: Path) -> list[dict[str, Any]]:
    from valuedrift.tracking import Tracker

    run_dir = root / name
    tracker = Tracker(TrackingConfig(uri=uri, experiment="bench_tracing"), run_dir)
    tracer = TimedTracer(ReplayScorer(params.seed), trace, phase, run_dir, tracker, params.eval.bootstrap, params.eval.ci, params.seed)
    tracer.mirror_seconds = []
    train_log = TrainLogCallback(tracker)
    out = []
    with tracker.run(name, {"stage": "bench_tracing"}):
        for step, is_phase in steps:
            t = time.perf_counter()
            tracer.evaluate(None, step, phase=is_phase)
            total = time.perf_counter() - t
            t = time.perf_counter()
            state = SimpleNamespace(is_world_process_zero=True, global_step=step)
            train_log.on_log(None, state, None, logs={"loss": 1.0 + step, "learning_rate": 5e-5, "grad_norm": 2.0, "epoch": 0.1})
            log_s = time.perf_counter() - t
            n = len(phase if is_phase else trace)
            out.append({"run": name, "step": step, "phase": is_phase, "probes": n, "mlflow_s": tracer.mirror_seconds[-1],
                        "bookkeeping_s": total - tracer.mirror_seconds[-1], "train_log_s": log_s})
    if tracker.failed is not None:
        raise SystemExit(f"MLflow logging failed during the benchmark: {tracker.failed}")
    return out


def eval_shares(uri: str) -> list[dict[str, Any]]:
    """share = time/eval_seconds ÷ the run's wall time, for every finished run that logged
    ``time/eval_seconds``: ``time/run_seconds`` where the run logged it (MLflow's end − start also counts
    later stages that log into the run, such as attribution), else end − start. (The trainer's
    ``train_runtime`` is no denominator: the final phase evaluation runs in ``on_train_end``, after the
    trainer has measured it.) ``eval_over_train`` is ``time/eval_share`` (eval ÷ the rest) where logged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    rows = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            m, info = run.data.metrics, run.info
            if "time/eval_seconds" not in m or not info.end_time or info.status != "FINISHED":
                continue
            wall = m.get("time/run_seconds", (info.end_time - info.start_time) / 1000)
            tags = run.data.tags
            rows.append({
                "experiment": exp.name, "run": info.run_name, "stage": tags.get("stage"), "algorithm": tags.get("algorithm"),
                "eval_s": m["time/eval_seconds"], "run_wall_s": wall, "train_runtime_s": m.get("train/train_runtime"),
                "share": m["time/eval_seconds"] / wall, "eval_over_train": m.get("time/eval_share"),
            })
    return rows


def estimated_shares(runs: dict[str, list[tuple[int, bool]]], n_trace: int, n_phase: int, req_per_s: float,
                     s_per_step: dict[str, float], max_steps: dict[str, int]) -> dict[str, dict[str, float]]:
    """Estimate per run: eval = 3·Σ_checkpoints probes / req_per_s; share = eval / (eval + steps · s_per_step).

    A preference run's step 0 is not scored: it adopts the SFT run's final evaluation (same weights).
    """
    out = {}
    for name, steps in runs.items():
        scored = [(s, phase) for s, phase in steps if not (name == "po" and s == 0)]
        requests = sum(3 * (n_phase if phase else n_trace) for _, phase in scored)
        eval_s = requests / req_per_s
        train_s = max_steps[name] * s_per_step[name]
        out[name] = {"requests": requests, "eval_s": eval_s, "train_s": train_s, "share": eval_s / (eval_s + train_s)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_tracing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="cadence and probe counts come from here")
    ap.add_argument("--data", default="data")
    ap.add_argument("--repeats", type=int, default=3, help="times the whole SFT + PO checkpoint sequence is replayed")
    ap.add_argument("--runs-uri", default=None, help="MLflow store with finished pipeline runs, for the evaluation share")
    ap.add_argument("--goal-s", type=float, default=1.0, help="per-checkpoint MLflow budget")
    ap.add_argument("--scoring-json", default=None, help="bench_scoring.py --out file: estimate the evaluation share from our req/s")
    ap.add_argument("--sft-s-per-step", type=float, default=4.2, help="for the estimate (default: measured SFT s/step, ENVIRONMENT notes)")
    ap.add_argument("--po-s-per-step", type=float, default=9.3, help="for the estimate (default: measured DPO s/step, ENVIRONMENT notes)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error("--repeats must be ≥ 1")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    params = load_params(a.params)
    bank = load_probe_bank(a.data)
    ev = params.eval
    trace = select_probes(bank, ev.trace_probes_per_topic, ev.splits, params.seed)
    phase = select_probes(bank, ev.phase_probes_per_topic, ev.splits, params.seed)
    runs = {"sft": checkpoint_steps(params.sft.max_steps, params.sft.eval_every), "po": checkpoint_steps(params.po.max_steps, params.po.eval_every)}
    print(f"trace set {len(trace)} probes, phase set {len(phase)} probes; checkpoints: "
          + ", ".join(f"{k} {[s for s, _ in v]}" for k, v in runs.items()))
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_tracing_") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for r in range(a.repeats):
            for name, steps in runs.items():
                records += time_run(f"{name}-{r}", steps, trace, phase, params, uri, Path(tmp))
    summary = {}
    for kind in ("trace", "phase"):
        sel = [x for x in records if x["phase"] == (kind == "phase")]
        summary[kind] = {k: {"median": statistics.median(x[k] for x in sel), "max": max(x[k] for x in sel)}
                         for k in ("mlflow_s", "bookkeeping_s", "train_log_s")}
        summary[kind]["checkpoints"] = len(sel)
    print(f"\nper checkpoint, evaluation excluded ({a.repeats} × the SFT + PO sequence, SQLite store):")
    print(f"{'checkpoint':10s} {'n':>4s} {'MLflow s (med/max)':>20s} {'bookkeeping s':>16s} {'train log s':>12s}")
    for kind, s in summary.items():
        print(f"{kind:10s} {s['checkpoints']:4d} {s['mlflow_s']['median']:9.3f}/{s['mlflow_s']['max']:.3f}"
              f" {s['bookkeeping_s']['median']:9.3f}/{s['bookkeeping_s']['max']:.3f} {s['train_log_s']['median']:12.4f}")
    worst = max(x["mlflow_s"] for x in records)
    print(f"worst MLflow time per checkpoint {worst:.3f} s; goal ≤ {a.goal_s:g} s: {'met' if worst <= a.goal_s else 'NOT met'}")
    shares = eval_shares(a.runs_uri) if a.runs_uri else []
    if a.runs_uri:
        print(f"\nevaluation share of training time, runs in {a.runs_uri}:")
        for s in shares:
            print(f"  {s['experiment']}/{s['run']} ({s['stage']}, {s['algorithm']}): eval {s['eval_s']:.1f} s of "
                  f"{s['run_wall_s']:.1f} s run wall time = {100 * s['share']:.0f}%")
        if not shares:
            print("  no finished run that logged time/eval_seconds")
    estimate = None
    if a.scoring_json:
        req_per_s = json.loads(Path(a.scoring_json).read_text())["scorers"]["ours"]["requests_per_s"]
        estimate = estimated_shares(runs, len(trace), len(phase), req_per_s, {"sft": a.sft_s_per_step, "po": a.po_s_per_step},
                                    {"sft": params.sft.max_steps, "po": params.po.max_steps})
        print(f"\nestimated evaluation share at the default cadence ({req_per_s:.1f} req/s from {a.scoring_json}; "
              "capability probe not included):")
        for name, e in estimate.items():
            print(f"  {name}: {e['requests']} requests → eval {e['eval_s']:.0f} s, training {e['train_s']:.0f} s → {100 * e['share']:.0f}%")
    report = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "loadavg": os.getloadavg(), "trace_probes": len(trace),
              "phase_probes": len(phase), "checkpoints": records, "summary": summary, "worst_mlflow_s": worst,
              "goal_met": worst <= a.goal_s, "eval_shares": shares, "estimated_shares": estimate}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
