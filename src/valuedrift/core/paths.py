"""Default locations of the pipeline's inputs and outputs (the folders ``dvc.yaml`` names).

Every stage takes these as defaults of its path flags (:mod:`valuedrift.stages.args`); library code
receives paths as arguments and never assumes them.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")  # authored, DVC-versioned data (data.dvc)
BASE_MODEL = Path("models/base")  # the prepared start model (prepare_model)
PROCESSED = Path("processed")  # built training data (prepare_data, preferences)
RUNS = Path("runs")  # traced training runs: runs/sft/<corpus>, runs/po/<algorithm>-<set>
SFT_RUNS = RUNS / "sft"
BASE_EVAL = RUNS / "base"  # the start model scored once for every SFT run (trace_base)
PO_RUNS = RUNS / "po"
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")
SWEEPS = Path("sweeps")
ATTRIBUTION = METRICS / "attribution"  # attribute@<kind>/<name>: metrics/attribution/<kind>/<name>/
COUNTERFACTUAL = Path("counterfactual")  # the counterfactual-retraining DVC subproject (make counterfactual)
PARAMS = Path("params.yaml")

PREFERENCES_DIR = "preferences"


def corpus_file(processed: Path, corpus: str) -> Path:
    """An SFT corpus built by ``prepare_data``: ``processed/sft/<corpus>.jsonl``."""
    return Path(processed) / "sft" / f"{corpus}.jsonl"


def preference_file(processed: Path, name: str) -> Path:
    """A preference set built by ``preferences@<name>``: ``processed/preferences/<name>.jsonl``."""
    return Path(processed) / PREFERENCES_DIR / f"{name}.jsonl"


def gap_files(processed: Path, name: str) -> dict[str, Path]:
    """The gap-analysis files of preference set ``name`` (csv, json, png) beside its data."""
    return {ext: Path(processed) / PREFERENCES_DIR / f"{name}.gap.{ext}" for ext in ("csv", "json", "png")}
