"""``counterfactual`` stage: did removing the top-k examples by influence shrink the drift more than removing
k random ones? (docs/definitions.md "Counterfactual retraining")

    valuedrift counterfactual [--runs runs] [--variant-runs counterfactual/runs]
                              [--selection counterfactual/metrics/selection.json] [--out counterfactual/metrics]

Compares, at the phase end on the phase probes, the drift of the selected stance s* of ``counterfactual.run``
(``full``), of its retraining without the top-k examples (``top``) and of each retraining without k random
ones, on the likelihood route (the readout attribution ranks by) and on the judged route where the runs
traced it. Writes ``<out>/counterfactual.json`` (selection, every drift with its 95% CI, the paired
difference top − random mean, a verdict per route and split), ``<out>/headline.json`` (the DVC metric: the
likelihood route on all probes), ``<out>/counterfactual.csv`` and ``<out>/counterfactual.png``, and logs them as the MLflow run ``counterfactual-<kind>-<name>``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.attribution.counterfactual import FULL, compare, variants, verdicts
from valuedrift.attribution.figures import plot_counterfactual
from valuedrift.core import paths
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import write_json
from valuedrift.core.rundir import JUDGED_DIR, RunDir
from valuedrift.reporting.runs import phase_end_tables
from valuedrift.stages.args import check_flags, check_path, parse, stage_parser

log = logging.getLogger(__name__)

OUT = paths.COUNTERFACTUAL / "metrics"
BOOKKEEPING = Path(".valuedrift") / "counterfactual"  # MLflow run bookkeeping (git-ignored)
ROUTES = {"likelihood": None, "judged": JUDGED_DIR}


def route_tables(original: RunDir, retrained: dict[str, RunDir], route: str | None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]] | None:
    """(the start table, variant -> final table) on one route, or None where a run did not trace it."""
    sub = (lambda r: RunDir(r.path / route)) if route else (lambda r: r)
    full = phase_end_tables(sub(original))
    if full is None:
        return None
    finals = {FULL: full[1]}
    for variant, run in retrained.items():
        ends = phase_end_tables(sub(run))
        if ends is None:
            return None
        finals[variant] = ends[1]
    return full[0], finals


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("counterfactual", __doc__, "runs", raw_doc=True)
    ap.add_argument("--variant-runs", default=str(paths.COUNTERFACTUAL / "runs"),
                    help=f"the retrained runs (default: {paths.COUNTERFACTUAL / 'runs'})")
    ap.add_argument("--selection", default=str(OUT / "selection.json"), help=f"what was removed (default: {OUT / 'selection.json'})")
    ap.add_argument("--out", default=str(OUT), help=f"output folder (default: {OUT})")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    a, params = parse(ap, argv)
    check_flags(a, {"runs": "dir", "variant-runs": "dir"}, ["out"])
    check_path("selection", a.selection, "file")
    selection = json.loads(Path(a.selection).read_text())
    cfg = params.counterfactual
    made = (selection.get("run"), selection.get("k"), selection.get("draws"), selection.get("baseline", "uniform"))
    if made != (cfg.run, cfg.k, cfg.draws, cfg.baseline):
        raise ConfigError("--selection", f"{a.selection} was made for (run, k, draws, baseline) = {made}, not counterfactual.* = "
                                         f"{(cfg.run, cfg.k, cfg.draws, cfg.baseline)}: rerun `valuedrift counterfactual-data`")
    original = RunDir(Path(a.runs) / cfg.run)
    retrained = {v: RunDir(Path(a.variant_runs) / v / cfg.run) for v in variants(cfg.draws)}
    for v, run in retrained.items():
        if not run.trajectory_file.exists():
            raise ConfigError("--variant-runs", f"{run.path}: not retrained yet (`valuedrift retrain --variant {v}`)")
    stance, sign = selection["stance"], int(selection["sign"])
    frames, result_routes = [], {}
    for route, sub in ROUTES.items():
        tables = route_tables(original, retrained, sub)
        if tables is None:
            log.info("the %s route was not traced by every run: left out", route)
            continue
        table = compare(tables[0], tables[1], stance, cfg.draws, params.eval.bootstrap, params.eval.ci, params.seed)
        table.insert(0, "route", route)
        frames.append(table)
        result_routes[route] = {"verdicts": verdicts(table, sign, cfg.draws), "rows": table.to_dict(orient="records")}
    if not frames:
        raise ConfigError("--variant-runs", "no route has phase-end evaluations in every run")
    table = pd.concat(frames, ignore_index=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "counterfactual.csv", index=False)
    result = {**{k: selection[k] for k in ("run", "stance", "sign", "measured_change", "select_split", "k", "draws", "examples", "rows")},
              "baseline": selection.get("baseline", "uniform"),
              "removed_labels": {v: selection["variants"][v]["removed_labels"] for v in variants(cfg.draws)},
              "n_seeds": 1, "routes": result_routes}
    write_json(out / "counterfactual.json", result)
    write_json(out / "headline.json", headline(result))
    title = (f"{cfg.run}: drift of {stance} after removing the top {cfg.k} examples by influence "
             f"({cfg.select_split} readout) or {cfg.k} random ones ({cfg.draws} draws"
             f"{', label-matched' if cfg.baseline == 'label_matched' else ''}), 1 training seed")
    plot_counterfactual(table, stance, out / "counterfactual.png", title)
    for route, r in result_routes.items():
        for split, v in r["verdicts"].items():
            log.info("%s route, %s probes: top − random mean = %+.3f [%+.3f, %+.3f] -> %s", route, split, v["difference"],
                     v["difference_lo"], v["difference_hi"], "useful" if v["useful"] else "not shown")
    if not a.no_mlflow:
        log_result(params, result, table, out)


def headline(result: dict[str, Any], route: str = "likelihood", split: str = "all") -> dict[str, Any]:
    """The few numbers ``dvc metrics show`` leads with: on the likelihood route, all probes, the drift of s*
    after each removal and the paired difference top − random mean with its CI and the verdict."""
    if route not in result["routes"]:
        route = next(iter(result["routes"]))
    rows = {r["variant"]: r for r in result["routes"][route]["rows"] if r["split"] == split}
    verdict = result["routes"][route]["verdicts"].get(split, {})
    out: dict[str, Any] = {"stance": result["stance"], "route": route, "split": split}
    for variant in ("full", "top", "random (mean)"):
        if variant in rows:
            out[f"drift_{variant.split(' ')[0]}"] = round(rows[variant]["value"], 4)
    out.update({k: round(verdict[k], 4) for k in ("difference", "difference_lo", "difference_hi") if k in verdict})
    out["useful"] = bool(verdict.get("useful", False))
    return out


def metric_name(variant: str) -> str:
    """A variant as an MLflow metric name: ``random (mean)`` -> ``random_mean``, ``top − random (mean)`` ->
    ``top_minus_random_mean``."""
    return re.sub(r"[^\w]+", "_", variant.replace("−", "minus")).strip("_")


def log_result(params: Any, result: dict[str, Any], table: pd.DataFrame, out: Path) -> None:
    """The comparison as an MLflow run ``counterfactual-<kind>-<name>``: each drift as a metric
    ``counterfactual/<route>/<split>/<variant>``, the files as artifacts."""
    from valuedrift.tracking import fresh_run

    name = "counterfactual-" + result["run"].replace("/", "-")
    run_params = {k: result[k] for k in ("run", "stance", "select_split", "k", "draws")}
    metrics = {f"counterfactual/{r.route}/{r.split}/{metric_name(r.variant)}": r.value for r in table.itertuples()}
    with fresh_run(params.tracking, BOOKKEEPING, name, {"stage": "counterfactual", "algorithm": "counterfactual"}, run_params) as tracker:
        tracker.log_metrics(metrics, step=0)
        for f in ("counterfactual.json", "headline.json", "counterfactual.csv", "counterfactual.png"):
            tracker.log_artifact(out / f, "counterfactual")
