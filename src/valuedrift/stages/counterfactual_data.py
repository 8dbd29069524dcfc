"""``counterfactual-data`` stage: the training data of ``counterfactual.run`` without the top-k examples by
influence, and without k random examples (``counterfactual.draws`` times; label-matched to the top k unless
``counterfactual.baseline: uniform``).

    valuedrift counterfactual-data [--attribution metrics/attribution] [--out counterfactual/data]
                                   [--selection counterfactual/metrics/selection.json]

Reads the run's attribution (``<attribution>/<kind>/<name>/influence.csv`` and ``summary.json``), picks the
readout (s*, split) and its sign (docs/definitions.md "Counterfactual retraining"), and writes one
processed-data folder per variant (``<out>/<variant>/sft/<corpus>.jsonl`` or
``<out>/<variant>/preferences/<set>.jsonl``: the run's data file minus every copy of the removed examples)
and ``selection.json``: s*, σ, the removed example ids and their labels per variant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from valuedrift.attribution.counterfactual import (
    counterfactual_run,
    removal_sets,
    removed_labels,
    target,
    variants,
    without,
)
from valuedrift.core import paths
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import read_records, write_json, write_jsonl
from valuedrift.stages.args import check_flags, check_output_file, check_path, parse, stage_parser

log = logging.getLogger(__name__)

OUT = paths.COUNTERFACTUAL / "data"
SELECTION = paths.COUNTERFACTUAL / "metrics" / "selection.json"


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("counterfactual-data", __doc__, "runs", "processed", "base-model", "sft-runs", raw_doc=True)
    ap.add_argument("--attribution", default=str(paths.ATTRIBUTION), help=f"attribution outputs (default: {paths.ATTRIBUTION})")
    ap.add_argument("--out", default=str(OUT), help=f"one processed-data folder per variant (default: {OUT})")
    ap.add_argument("--selection", default=str(SELECTION), help=f"what was removed (default: {SELECTION})")
    a, params = parse(ap, argv)
    check_flags(a, {"runs": "dir", "processed": "dir", "base-model": "dir", "attribution": "dir"}, ["out"])
    check_output_file("selection", a.selection)
    check_path("sft-runs", a.sft_runs, "dir", must_exist=False)  # a po run's start model, if its tags do not record it
    cfg = params.counterfactual
    info = counterfactual_run(params, Path(a.runs), Path(a.processed), Path(a.base_model), Path(a.sft_runs))
    folder = Path(a.attribution) / info.label
    for f in ("influence.csv", "summary.json"):
        if not (folder / f).is_file():
            raise ConfigError("--attribution", f"{folder / f} is missing: run `dvc repro attribute@{cfg.run}` first")
    frame = pd.read_csv(folder / "influence.csv")
    summary = json.loads((folder / "summary.json").read_text())
    stance, sign, change = target(summary, cfg)
    removed = removal_sets(frame, stance, cfg.select_split, sign, cfg.k, cfg.draws, params.seed, cfg.baseline)
    rows = read_records(info.data_file, lambda obj, path, line: obj)
    relative = info.data_file.relative_to(Path(a.processed))
    sizes = {}
    for variant in variants(cfg.draws):
        kept = without(rows, info.kind, removed[variant])
        dest = Path(a.out) / variant / relative
        write_jsonl(dest, kept)
        sizes[variant] = len(kept)
        log.info("%s: %d of %d rows kept (%d examples removed)", dest, len(kept), len(rows), len(removed[variant]))
    ids = frame.set_index("row")["example_id"]
    write_json(Path(a.selection), {
        "run": info.label, "kind": info.kind, "data_file": str(info.data_file), "rows": len(rows), "examples": len(frame),
        "stance": stance, "sign": sign, "measured_change": change, "select_split": cfg.select_split, "k": cfg.k,
        "draws": cfg.draws, "baseline": cfg.baseline, "seed": params.seed,
        "variants": {v: {"rows_kept": sizes[v], "removed": [str(ids[r]) for r in removed[v]],
                         "removed_labels": removed_labels(frame, removed[v])} for v in variants(cfg.draws)},
    })
