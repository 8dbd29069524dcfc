"""The command-line flags that stages share: ``--params`` and the standard path flags.

Each path flag has one name, one default (:mod:`valuedrift.core.paths`) and one help text here, so every
stage spells it the same way; a stage adds only the flags it uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from valuedrift.config.load import load_params
from valuedrift.config.schema.params import Params
from valuedrift.core import paths

# flag -> (default, help)
PATH_FLAGS: dict[str, tuple[Path, str]] = {
    "data": (paths.DATA, "authored data folder (versioned by data.dvc)"),
    "processed": (paths.PROCESSED, "built training data (prepare_data, preferences)"),
    "base-model": (paths.BASE_MODEL, "the prepared start model (prepare_model)"),
    "runs": (paths.RUNS, "traced training runs"),
    "sft-runs": (paths.SFT_RUNS, "where the SFT runs are"),
    "plots": (paths.PLOTS, "plot output folder"),
}


def stage_parser(command: str, doc: str | None, *path_flags: str) -> argparse.ArgumentParser:
    """An argument parser for ``valuedrift <command>`` with ``--params`` and the named path flags."""
    ap = argparse.ArgumentParser(prog=f"valuedrift {command}", description=doc)
    ap.add_argument("--params", default=str(paths.PARAMS), help="params file (default: params.yaml)")
    for flag in path_flags:
        default, help_ = PATH_FLAGS[flag]
        ap.add_argument(f"--{flag}", default=str(default), help=f"{help_} (default: {default})")
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, Params]:
    """Parse ``argv`` and load ``--params`` (validated)."""
    a = ap.parse_args(argv)
    return a, load_params(a.params)
