"""Loading ``params.yaml``: parse into the schema, then the cross-checks that need the registries.

The schema (:mod:`valuedrift.config.schema`) checks shapes and ranges; here the names that refer to
something outside params are checked before any work: the model source (:mod:`valuedrift.models`), the
algorithms and their hyperparameters (:mod:`valuedrift.algorithms.registry`), the topics of the probe
bank (:mod:`valuedrift.data.schemas`) and the sweep's search space (:mod:`valuedrift.tune.space`). Every
error is a :class:`~valuedrift.core.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from valuedrift.algorithms.registry import ALGORITHMS, algorithm_hparams
from valuedrift.config.path_checks import check_param_paths
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import from_dict
from valuedrift.core.errors import ConfigError, check
from valuedrift.core.paths import DATA
from valuedrift.data.topics import known_topics
from valuedrift.models import check_model_spec
from valuedrift.tune.space import check_tune, check_tune_against_params


def check_model(params: Params) -> None:
    problem = check_model_spec(params.model.name)
    check(problem is None, "model.name", problem or "")


def check_topics(params: Params, bank_dir: Path = DATA / "v_prism") -> None:
    """Topics named in params are topics of the probe bank (its topics.jsonl; unchecked without one: the
    stage that reads the bank checks them again)."""
    known = known_topics(bank_dir)
    if known is None:
        return
    for name, pref in params.prepare_data.preference_sets.items():
        key = f"prepare_data.preference_sets.{name}.topics"
        for i, t in enumerate(pref.topics):
            check(t in known, f"{key}[{i}]", f"unknown topic {t!r}; the probe bank's topics: {', '.join(known)}")


def check_algorithms(params: Params) -> None:
    po = params.po
    for i, a in enumerate(po.algorithms):
        check(a in ALGORITHMS, f"po.algorithms[{i}]", f"unknown algorithm {a!r}; valid: {', '.join(ALGORITHMS)}")
    for a, given in po.hparams.items():
        check(a in ALGORITHMS, f"po.hparams.{a}", f"unknown algorithm; valid: {', '.join(ALGORITHMS)}")
        ALGORITHMS[a].resolve_hparams(given, f"po.hparams.{a}")
    for a in po.algorithms:
        if ALGORITHMS[a].check is not None:  # cross-checks of hparams against the po section
            ALGORITHMS[a].check(algorithm_hparams(po.hparams, a), po, f"po.hparams.{a}")


def parse_params(data: dict[str, Any]) -> Params:
    """Build and fully validate :class:`Params` from a mapping (the contents of params.yaml)."""
    params = from_dict(Params, data)
    params.validate()
    check_param_paths(params)  # before the cross-checks that open files (tune.reference)
    check_model(params)
    check_topics(params)
    check_algorithms(params)
    check_tune(params.tune, "tune")
    check_tune_against_params(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file. Raises ConfigError (bad value) or FileNotFoundError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("params", f"{path} is not valid YAML: {e}") from e
    return parse_params(data or {})
