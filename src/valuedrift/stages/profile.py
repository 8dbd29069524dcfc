"""``profile``: turn a params profile (dotted-key overrides, e.g. profiles/full_study.yaml) into DVC
``-S key=value`` arguments, after checking that params.yaml with those overrides is valid.

    dvc exp run $(valuedrift profile profiles/full_study.yaml)     # what `make full-study` runs
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from valuedrift.config.load import parse_params
from valuedrift.core.errors import ConfigError
from valuedrift.stages.args import check_path, stage_parser


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with each dotted key set; a key whose parent does not exist is an error."""
    out = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise ConfigError(".".join(parents[: i + 1]), f"profile key {dotted!r}: no such section in params.yaml")
            node = node[part]
        node[leaf] = value
    return out


def dvc_set_args(overrides: dict[str, Any]) -> list[str]:
    """``-S key=value`` pairs; values in JSON (DVC parses lists and numbers in that form)."""
    args = []
    for k, v in overrides.items():
        value = json.dumps(v, separators=(",", ":"))  # no spaces: survives $(...) word splitting
        args += ["-S", f"{k}={value}"]
    return args


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("profile", __doc__)
    ap.add_argument("profile", help="YAML mapping of dotted params keys to values")
    a = ap.parse_args(argv)
    check_path("PROFILE", a.profile, "file")
    check_path("params", a.params, "file")
    overrides = yaml.safe_load(Path(a.profile).read_text()) or {}
    base = yaml.safe_load(Path(a.params).read_text()) or {}
    parse_params(apply_overrides(base, overrides))  # validate before anything runs
    print(" ".join(dvc_set_args(overrides)))
