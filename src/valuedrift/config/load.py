"""Loading ``params.yaml``: parse into the schema, then the cross-checks that need the registries.

The schema (:mod:`valuedrift.config.schema`) checks shapes and ranges; here the names that refer to
something outside params are checked before any work: the model source (:mod:`valuedrift.models`), the
algorithms and their hyperparameters (:mod:`valuedrift.algorithms.registry`), the topics of the probe
bank (:mod:`valuedrift.data.schemas`) and the sweep's search space (:mod:`valuedrift.tune.space`). Every
error is a :class:`~valuedrift.core.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from valuedrift.algorithms.registry import ALGORITHMS, algorithm_hparams
from valuedrift.config.path_checks import check_param_paths
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import from_dict
from valuedrift.core import yaml12
from valuedrift.core.errors import ConfigError, check, check_defined
from valuedrift.core.paths import DATA
from valuedrift.data.topics import known_topics
from valuedrift.models import BUNDLED, HUB_ID, check_model_spec
from valuedrift.tune.space import check_tune, check_tune_against_params


class UnpinnedRevisionWarning(UserWarning):
    """``model.name`` is a hub id and ``model.revision`` is null: the weights may change under the run."""


def check_model(params: Params) -> None:
    """``model.name`` is a model source; a hub id without ``model.revision`` warns."""
    m = params.model
    problem = check_model_spec(m.name)
    check(problem is None, "model.name", problem or "")
    if m.revision is None and m.name not in BUNDLED and not Path(m.name).expanduser().exists() and HUB_ID.match(m.name):
        warnings.warn(
            f"model.revision is null for the hub id {m.name!r}: runs use whatever the hub serves that day; "
            "pin a commit (model.revision: <sha>) to make them reproducible",
            UnpinnedRevisionWarning,
            stacklevel=2,
        )


def check_adapters(params: Params) -> None:
    """QLoRA (``<section>.peft.quantize``) needs a CUDA device: not ``model.device`` cpu or mps (``auto``
    is checked again when the model loads, ``valuedrift.adapters.quantization_config``)."""
    device = params.model.device
    for key, train in (("sft", params.sft), ("po", params.po)):
        if train.peft is not None and train.peft.quantize is not None:
            check(
                device == "auto" or device.startswith("cuda"),
                f"{key}.peft.quantize",
                f"QLoRA ({train.peft.quantize}, bitsandbytes) needs a CUDA device, but model.device is {device!r}: "
                "set model.device: cuda (or auto on a GPU machine), or quantize: null (plain LoRA)",
            )


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


def check_attribution(params: Params) -> None:
    """Every ``attribute.runs`` entry is a run the study trains (after the algorithm names are checked)."""
    po_runs = [f"{a}-{s}" for a in params.po.algorithms for s in params.po.preference_sets]
    for i, run in enumerate(params.attribute.runs):
        kind, _, name = run.partition("/")
        defined = params.sft.corpora if kind == "sft" else po_runs
        check_defined(name, defined, f"attribute.runs[{i}]", "sft.corpora" if kind == "sft" else "po.algorithms × po.preference_sets")


def parse_params(data: dict[str, Any]) -> Params:
    """Build and fully validate :class:`Params` from a mapping (the contents of params.yaml)."""
    params = from_dict(Params, data)
    params.validate()
    check_param_paths(params)  # before the cross-checks that open files (tune.reference)
    check_model(params)
    check_adapters(params)
    check_topics(params)
    check_algorithms(params)
    check_attribution(params)
    check_tune(params.tune, "tune")
    check_tune_against_params(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file. Raises ConfigError (bad value) or FileNotFoundError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        data = yaml12.load(path.read_text())  # floats as DVC writes them (5e-06)
    except yaml.YAMLError as e:
        raise ConfigError("params", f"{path} is not valid YAML: {e}") from e
    return parse_params(data or {})
