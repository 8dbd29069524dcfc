"""``profile``: turn a params profile (dotted-key overrides, e.g. profiles/full_study.yaml) into DVC
``-S key=value`` arguments, after checking that params.yaml with those overrides is valid.

    dvc exp run $(valuedrift profile profiles/full_study.yaml)     # what `make full-study` runs
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from valuedrift.config.load import parse_params
from valuedrift.core import yaml12
from valuedrift.core.errors import ConfigError
from valuedrift.stages.args import check_path, stage_parser


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with each dotted key set; a key whose parent does not exist is an error. A key
    written ``~a.b`` (value ignored) removes ``a.b``, as ``dvc exp run -S ~a.b`` does."""
    out = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = out
        remove = dotted.startswith("~")
        *parents, leaf = dotted.removeprefix("~").split(".")
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise ConfigError(".".join(parents[: i + 1]), f"profile key {dotted!r}: no such section in params.yaml")
            node = node[part]
        if remove:
            if leaf not in node:
                raise ConfigError(dotted[1:], f"profile key {dotted!r}: nothing to remove")
            del node[leaf]
        elif isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merged(node[leaf], value)
        else:
            node[leaf] = value
    return out


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` merged into ``old`` key by key (nested mappings too): what ``dvc exp run -S ++key={...}`` does."""
    out = copy.deepcopy(old)
    for k, v in new.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def hydra_value(v: Any) -> str:
    """``v`` in the override grammar ``dvc exp run -S`` parses (Hydra's): JSON for scalars and strings, but
    mappings with bare keys (``{source:{kind:"alpaca"}}``; Hydra rejects JSON's quoted keys). No spaces,
    so the argument survives ``$(...)`` word splitting."""
    if isinstance(v, dict):
        for k in v:
            if not str(k).isidentifier():
                raise ConfigError(str(k), "profile mapping keys must be plain names (letters, digits, _)")
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, float) and "e" in repr(v) and "." not in repr(v):
        mantissa, exponent = repr(v).split("e")
        return f"{mantissa}.0e{exponent}"  # Hydra reads 5e-06 as a string, 5.0e-06 as a number
    return json.dumps(v, separators=(",", ":"))


def has_key(base: dict[str, Any], dotted: str) -> bool:
    node: Any = base
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def dvc_set_args(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> list[str]:
    """``-S key=value`` pairs (:func:`hydra_value`). A key params.yaml (``base``) does not have yet (a new
    corpus) and a mapping value are written ``++key=value`` (Hydra: add, or merge into the mapping there;
    a plain ``key={...}`` over a mapping is refused); ``~key`` removes a key."""
    args = []
    for k, v in overrides.items():
        if k.startswith("~"):
            args += ["-S", k]
            continue
        add = isinstance(v, dict) or (base is not None and not has_key(base, k))
        args += ["-S", f"{'++' if add else ''}{k}={hydra_value(v)}"]
    return args


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("profile", __doc__)
    ap.add_argument("profile", help="YAML mapping of dotted params keys to values")
    a = ap.parse_args(argv)
    check_path("PROFILE", a.profile, "file")
    check_path("params", a.params, "file")
    overrides = yaml12.load(Path(a.profile).read_text()) or {}
    base = yaml12.load(Path(a.params).read_text()) or {}
    parse_params(apply_overrides(base, overrides))  # validate before anything runs
    print(" ".join(dvc_set_args(overrides, base)))
