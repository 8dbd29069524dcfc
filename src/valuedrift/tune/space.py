"""The search space of a ``tune`` study, read from params.yaml and checked against the algorithm registry.

Optuna parameter names:

- ``algorithm``: the algorithm choice, only when ``tune.algorithms`` lists more than one;
- the shared dimensions in ``tune.space``: ``steps`` (→ ``po.max_steps``), ``learning_rate``
  (→ ``po.learning_rate``) and ``gap`` (→ the value gap of ``tune.preference_set``);
- ``<algorithm>.<hparam>`` for each algorithm's own ranges in ``tune.hparams.<algorithm>`` (``dpo.beta``),
  names and allowed values from :mod:`valuedrift.train.algorithms`.

A list-valued hyperparameter (DPO's ``loss_type``) takes choices that are lists (a bare string means a
one-item list); Optuna stores each choice as its comma-joined string (``"sigmoid,sft"``).

Everything here runs at parameter validation, before any model loads: an empty or inverted range, an
unknown hyperparameter, or a value the registry rejects fails naming its key.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from valuedrift.algorithms.registry import ALGORITHMS
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.tune import RangeConfig, TuneConfig
from valuedrift.core.errors import ConfigError, check
from valuedrift.tune.objectives import parse_reference

ALGORITHM_PARAM = "algorithm"


def _shared_bounds(name: str, low: float | None, high: float | None, low_open: bool = False) -> Callable[[str, Any], None]:
    def check_value(key: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(key, f"expected a number, got {v!r}")
        check(low is None or (v > low if low_open else v >= low), key, f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
        check(high is None or v <= high, key, f"{name} must be <= {high}, got {v}")

    return check_value


# shared dimension -> (integer?, value check)
SHARED: dict[str, tuple[bool, Callable[[str, Any], None]]] = {
    "steps": (True, _shared_bounds("steps (po.max_steps)", 1, None)),
    "learning_rate": (False, _shared_bounds("learning_rate", 0.0, 1.0, low_open=True)),
    "gap": (False, _shared_bounds("gap", 0.0, 1.0)),
}


@dataclass(frozen=True)
class Dimension:
    """One Optuna parameter: its name, the params.yaml key of its range, and how values are stored."""

    name: str
    key: str
    rng: RangeConfig
    integer: bool = False
    as_list: bool = False  # list-valued hyperparameter: a choice is a list, stored comma-joined

    def encode(self, value: Any) -> Any:
        """A params.yaml value -> what Optuna stores."""
        if self.as_list:
            return ",".join(value) if isinstance(value, list) else str(value)
        return value

    def decode(self, value: Any) -> Any:
        """What Optuna stores -> the value a trainer gets."""
        if self.as_list:
            return str(value).split(",")
        if self.integer and isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @property
    def discrete(self) -> bool:
        return self.rng.choices is not None or self.rng.step is not None or self.integer

    def grid(self) -> list[Any]:
        """Every value of a discrete dimension (choices, or low..high by step), in Optuna's stored form."""
        r = self.rng
        if r.choices is not None:
            return [self.encode(c) for c in r.choices]
        step = r.step or 1
        n = int(math.floor((r.high - r.low) / step + 1e-9))
        values = [r.low + k * step for k in range(n + 1)]
        return [int(round(v)) for v in values] if self.integer else [round(v, 12) for v in values]

    def suggest(self, trial: Any) -> Any:
        r = self.rng
        if r.choices is not None:
            return trial.suggest_categorical(self.name, [self.encode(c) for c in r.choices])
        if self.integer:
            return trial.suggest_int(self.name, int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
        return trial.suggest_float(self.name, r.low, r.high, step=r.step, log=r.log)

    def contains(self, value: Any) -> bool:
        """Whether a value given in params.yaml (e.g. in ``tune.enqueue``) lies in this dimension."""
        r = self.rng
        if r.choices is not None:
            return self.encode(value) in [self.encode(c) for c in r.choices]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not float(value).is_integer():
            return False
        return r.low <= value <= r.high


def _check_range(rng: RangeConfig, key: str, integer: bool, check_value: Callable[[str, Any], None], as_list: bool = False) -> None:
    """The range itself (empty, inverted, log/step) and every value it can produce against the registry."""
    rng.validate(key)
    if rng.choices is not None:
        for i, c in enumerate(rng.choices):
            check_value(f"{key}.choices[{i}]", [c] if as_list and not isinstance(c, list) else c)
        return
    for end in ("low", "high"):
        value = getattr(rng, end)
        if integer:
            check(float(value).is_integer(), f"{key}.{end}", f"must be an integer, got {value}")
            value = int(value)
        check_value(f"{key}.{end}", value)
    if integer and rng.step is not None:
        check(float(rng.step).is_integer(), f"{key}.step", f"must be an integer, got {rng.step}")


def _hparam_dimension(algorithm: str, name: str, rng: RangeConfig, key: str) -> Dimension:

    algo = ALGORITHMS[algorithm]
    check(name in algo.hparams, key, f"unknown hyperparameter for {algorithm}; allowed: {', '.join(algo.hparams)}")
    hp = algo.hparams[name]
    as_list = isinstance(hp.default, list)
    numeric = hp.choices is None and not as_list and isinstance(hp.default, int | float) and not isinstance(hp.default, bool)
    check(numeric or rng.choices is not None, key, f"{algorithm}.{name} takes a list of choices, not a low/high range")
    integer = numeric and isinstance(hp.default, int)
    _check_range(rng, key, integer, hp.check, as_list)
    return Dimension(f"{algorithm}.{name}", key, rng, integer=integer, as_list=as_list)


def dimensions(tune: TuneConfig, key: str = "tune") -> dict[str, list[Dimension]]:
    """Per algorithm, the dimensions a trial of that algorithm samples (shared ones first)."""
    shared = []
    for name, rng in tune.space.items():
        k = f"{key}.space.{name}"
        check(name in SHARED, k, f"not a shared dimension; allowed: {', '.join(SHARED)} (algorithm ranges go in {key}.hparams)")
        integer, check_value = SHARED[name]
        _check_range(rng, k, integer, check_value)
        shared.append(Dimension(name, k, rng, integer=integer))
    out = {}
    for a in tune.algorithms:
        own = [_hparam_dimension(a, n, r, f"{key}.hparams.{a}.{n}") for n, r in (tune.hparams.get(a) or {}).items()]
        out[a] = shared + own
    return out


def check_tune(tune: TuneConfig, key: str = "tune") -> None:
    """Everything about ``tune`` that needs the registry; raises ConfigError naming the key."""
    check(bool(tune.algorithms), f"{key}.algorithms", "must list at least one algorithm")
    for i, a in enumerate(tune.algorithms):
        check(a in ALGORITHMS, f"{key}.algorithms[{i}]", f"unknown algorithm {a!r}; valid: {', '.join(ALGORITHMS)}")
        check(a not in tune.algorithms[:i], f"{key}.algorithms[{i}]", f"{a!r} is listed twice")
    for a, given in tune.hparams.items():
        check(a in tune.algorithms, f"{key}.hparams.{a}", f"{a!r} is not in {key}.algorithms ({', '.join(tune.algorithms)})")
        check(isinstance(given, dict), f"{key}.hparams.{a}", "expected a mapping of hyperparameter ranges")
    dims = dimensions(tune, key)
    if sampler_name(tune) == "grid":
        check(
            len(tune.algorithms) == 1,
            f"{key}.algorithms",
            "the grid sampler sweeps one algorithm at a time (its hyperparameters are conditional on it); run one study per algorithm",
        )
        for d in dims[tune.algorithms[0]]:
            check(d.discrete, d.key, "the grid sampler needs choices or a step here")
        check(bool(dims[tune.algorithms[0]]), f"{key}.space", "the grid sampler needs at least one dimension")
        check(not tune.enqueue, f"{key}.enqueue", "the grid sampler runs its own points; enqueue needs tpe, random or nsga2")
    for i, entry in enumerate(tune.enqueue):
        enqueue_values(tune, entry, f"{key}.enqueue[{i}]", dims)


def sampler_name(tune: TuneConfig) -> str:
    """``auto`` = TPE for one objective, NSGA-II for several."""
    if tune.sampler != "auto":
        return tune.sampler
    return "nsga2" if len(tune.objectives) > 1 else "tpe"


def enqueue_values(tune: TuneConfig, entry: Any, key: str, dims: dict[str, list[Dimension]] | None = None) -> dict[str, Any]:
    """A ``tune.enqueue`` entry (params.yaml values) -> Optuna's stored values, checked against the space."""
    dims = dims or dimensions(tune)
    check(isinstance(entry, dict), key, "expected a mapping of parameter name -> value")
    if len(tune.algorithms) > 1:
        check(ALGORITHM_PARAM in entry, f"{key}.{ALGORITHM_PARAM}", f"must name one of {', '.join(tune.algorithms)}")
        algorithm = entry[ALGORITHM_PARAM]
        check(algorithm in tune.algorithms, f"{key}.{ALGORITHM_PARAM}", f"{algorithm!r} is not in tune.algorithms")
        out: dict[str, Any] = {ALGORITHM_PARAM: algorithm}
    else:
        algorithm = tune.algorithms[0]
        check(ALGORITHM_PARAM not in entry or entry[ALGORITHM_PARAM] == algorithm, f"{key}.{ALGORITHM_PARAM}",
               f"the study sweeps only {algorithm}")
        out = {}
    by_name = {d.name: d for d in dims[algorithm]}
    for name, value in entry.items():
        if name == ALGORITHM_PARAM:
            continue
        check(name in by_name, f"{key}.{name}", f"not a dimension of {algorithm}'s search space ({', '.join(by_name) or 'none'})")
        check(by_name[name].contains(value), f"{key}.{name}", f"{value!r} lies outside {by_name[name].key}")
        out[name] = by_name[name].encode(value)
    return out


@dataclass
class Choice:
    """What one trial trains: the algorithm and its decoded values, by Optuna parameter name."""
    algorithm: str
    values: dict[str, Any]

    def hparams(self) -> dict[str, Any]:
        prefix = f"{self.algorithm}."
        return {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}


def suggest(trial: Any, tune: TuneConfig, dims: dict[str, list[Dimension]]) -> Choice:
    """Sample a trial's algorithm and values (conditional: only the chosen algorithm's own dimensions)."""
    if len(tune.algorithms) > 1:
        algorithm = trial.suggest_categorical(ALGORITHM_PARAM, list(tune.algorithms))
    else:
        algorithm = tune.algorithms[0]
    return Choice(algorithm, {d.name: d.decode(d.suggest(trial)) for d in dims[algorithm]})


def grid_space(tune: TuneConfig, dims: dict[str, list[Dimension]]) -> dict[str, list[Any]]:
    return {d.name: d.grid() for d in dims[tune.algorithms[0]]}


def apply_choice(params: Params, tune: TuneConfig, choice: Choice) -> Params:
    """A copy of ``params`` with the trial's values in place; re-validated (registry cross-checks too)."""
    p = copy.deepcopy(params)
    v = choice.values
    if "steps" in v:
        p.po.max_steps = int(v["steps"])
    if "learning_rate" in v:
        p.po.learning_rate = float(v["learning_rate"])
    if "gap" in v:
        p.prepare_data.preference_sets[tune.preference_set].gap = float(v["gap"])
    p.po.hparams[choice.algorithm] = {**(p.po.hparams.get(choice.algorithm) or {}), **choice.hparams()}
    p.po.algorithms = [choice.algorithm]
    p.po.preference_sets = [tune.preference_set]
    p.validate()
    return p


def override_keys(tune: TuneConfig, choice: Choice) -> dict[str, Any]:
    """The trial's values as params.yaml keys (for best_params.yaml and ``dvc exp run -S``); the algorithm
    only when the study chose among several."""
    out: dict[str, Any] = {"po.algorithms": [choice.algorithm]} if len(tune.algorithms) > 1 else {}
    for name, value in choice.values.items():
        if name == "steps":
            out["po.max_steps"] = value
        elif name == "learning_rate":
            out["po.learning_rate"] = value
        elif name == "gap":
            out[f"prepare_data.preference_sets.{tune.preference_set}.gap"] = value
        else:
            out[f"po.hparams.{name}"] = value
    return out


def check_tune_against_params(params: Params) -> None:
    """``tune`` keys that refer to other sections."""
    t = params.tune
    check(
        t.preference_set in params.prepare_data.preference_sets,
        "tune.preference_set",
        f"{t.preference_set!r} is not defined in prepare_data.preference_sets ({', '.join(params.prepare_data.preference_sets)})",
    )
    check(
        params.prepare_data.preference_sets[t.preference_set].generator != "source",
        "tune.preference_set",
        f"{t.preference_set!r} reads a dataset (generator: source); a sweep rebuilds its set with each trial's gap, "
        "so it needs a synthetic set (generator bank, hf or openai)",
    )
    check(
        "steps" not in t.space or params.po.num_train_epochs is None,
        "tune.space.steps",
        f"sweeps po.max_steps, but po trains by epochs (po.num_train_epochs: {params.po.num_train_epochs}): drop "
        "the steps dimension, or set po.max_steps and po.num_train_epochs: null",
    )
    check(
        t.split == "all" or t.split in params.eval.splits,
        "tune.split",
        f"{t.split!r} is not scored: eval.splits is {params.eval.splits}",
    )
    check(
        "capability" not in t.objectives or params.eval.capability_rows > 0,
        "tune.objectives",
        "objective 'capability' needs the capability probe: set eval.capability_rows > 0",
    )
    if isinstance(t.reference, dict):

        parse_reference(t.reference, "tune.reference")
