"""Section ``tune``: the Optuna study over preference-optimisation runs (valuedrift.tune).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from valuedrift.core.errors import check
from valuedrift.core.vocab import SPLITS, STANCES


@dataclass
class RangeConfig:
    """One search dimension of ``tune``: a numeric range ``low``..``high`` (both inclusive; ``log`` scale or
    a grid ``step``) or a list of ``choices``. ``low == high`` is an empty range, ``low > high`` an
    inverted one: both are errors (fix a value with ``choices: [v]``)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def validate(self, key: str) -> None:
        if self.choices is not None:
            check(
                self.low is None and self.high is None and self.step is None and not self.log,
                key,
                "give either choices or a low/high range, not both",
            )
            check(bool(self.choices), f"{key}.choices", "empty: list at least one value")
            return
        check(self.low is not None and self.high is not None, key, "needs low and high, or choices")
        check(self.low != self.high, key, f"empty range: low = high = {self.low} (to fix a value use choices: [{self.low}])")
        check(self.low < self.high, key, f"inverted range: low {self.low} > high {self.high}")
        if self.log:
            check(self.low > 0, f"{key}.low", f"a log range needs low > 0, got {self.low}")
            check(self.step is None, f"{key}.step", "log and step cannot be combined")
        if self.step is not None:
            check(0 < self.step <= self.high - self.low, f"{key}.step", f"must lie in (0, high - low], got {self.step}")


TUNE_OBJECTIVES: tuple[str, ...] = ("toward_target", "preserve", "align", "capability")
TUNE_SAMPLERS: tuple[str, ...] = ("auto", "tpe", "grid", "random", "nsga2")


@dataclass
class TuneConfig:
    """The ``tune`` stage (``valuedrift sweep``, sweep.py): an Optuna study whose trials are preference-
    optimisation runs from the SFT checkpoint (``po.start_from``) on ``preference_set``, scored by the value
    drift they cause. ``algorithms`` is the algorithm choice; ``space`` holds the shared dimensions (``steps``
    = po.max_steps, ``learning_rate``, ``gap`` = the preference set's value gap) and ``hparams.<algorithm>``
    each algorithm's own ranges (names from the registry). Anything not swept keeps its ``po`` value.
    ``objectives`` (one = single-objective, more = a Pareto front) are defined in sweep_objectives.py, the
    space's checks against the registry in sweep_space.py.
    """

    study: str = "valuedrift"
    storage: str = "sqlite:///optuna.db"
    n_trials: int = 8
    timeout_s: float | None = None
    workers: int = 1
    sampler: str = "auto"
    startup_trials: int = 4
    population_size: int = 8
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = 2
    pruner_warmup_steps: int = 0
    heartbeat_s: int = 30
    objectives: list[str] = field(default_factory=lambda: ["toward_target"])
    target: str = "auto"
    split: str = "test"
    reference: dict[str, Any] | str | None = None
    alignment: Literal["jsd", "w1"] = "jsd"
    preference_set: str = "value_gap"
    algorithms: list[str] = field(default_factory=lambda: ["dpo"])
    space: dict[str, RangeConfig] = field(default_factory=dict)
    hparams: dict[str, dict[str, RangeConfig]] = field(default_factory=dict)
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    keep_models: bool = False

    def validate(self, key: str) -> None:
        check(bool(self.study.strip()), f"{key}.study", "must not be empty")
        check(self.n_trials >= 1, f"{key}.n_trials", f"must be >= 1, got {self.n_trials}")
        check(self.timeout_s is None or self.timeout_s > 0, f"{key}.timeout_s", "must be > 0 seconds, or null for no limit")
        check(self.workers >= 1, f"{key}.workers", f"must be >= 1, got {self.workers}")
        check(self.sampler in TUNE_SAMPLERS, f"{key}.sampler", f"{self.sampler!r} is not one of {', '.join(TUNE_SAMPLERS)}")
        check(self.startup_trials >= 0, f"{key}.startup_trials", "must be >= 0")
        check(self.population_size >= 2, f"{key}.population_size", "must be >= 2")
        check(self.pruner_startup_trials >= 0, f"{key}.pruner_startup_trials", "must be >= 0")
        check(self.pruner_warmup_steps >= 0, f"{key}.pruner_warmup_steps", "must be >= 0")
        check(self.heartbeat_s >= 1, f"{key}.heartbeat_s", f"must be >= 1 second, got {self.heartbeat_s}")
        check(bool(self.objectives), f"{key}.objectives", "must list at least one objective")
        for i, o in enumerate(self.objectives):
            check(o in TUNE_OBJECTIVES, f"{key}.objectives[{i}]", f"{o!r} is not one of {', '.join(TUNE_OBJECTIVES)}")
            check(o not in self.objectives[:i], f"{key}.objectives[{i}]", f"{o!r} is listed twice")
        check(self.target in ("auto", *STANCES), f"{key}.target", f"{self.target!r} is not auto or one of {', '.join(STANCES)}")
        check(self.split in (*SPLITS, "all"), f"{key}.split", f"{self.split!r} is not one of {', '.join(SPLITS)}, all")
        check(
            "align" not in self.objectives or self.reference is not None,
            f"{key}.reference",
            "objective 'align' needs a reference profile (inline {support, neutral, oppose} or a file)",
        )
