"""Typed, validated parameters.

``params.yaml`` is parsed once into the dataclasses below. Every check runs before any model is loaded;
an invalid value raises :class:`ConfigError` naming the dotted key (``sft.learning_rate``) and what is
allowed. Unknown keys are errors too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

STANCES: tuple[str, ...] = ("support", "neutral", "oppose")
SPLITS: tuple[str, ...] = ("dev", "test")

Stance = Literal["support", "neutral", "oppose"]


class ConfigError(ValueError):
    """An invalid parameter. ``key`` is the dotted path in params.yaml."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"params: {key}: {message}")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(key, message)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Which model to start from.

    ``name`` is a bundled name (``smollm2-135m-instruct``, ``gemma3-270m``), a local folder with a
    Hugging Face model, or a hub id such as ``Qwen/Qwen3-4B-Base`` (needs a network connection).
    """

    name: str = "smollm2-135m-instruct"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"

    def validate(self, key: str) -> None:
        _check(bool(self.name.strip()), f"{key}.name", "must not be empty")
        _check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith(("cuda", "mps")),
            f"{key}.device",
            f"{self.device!r} is not one of auto, cpu, cuda[:N], mps",
        )
        from valuedrift.models import check_model_spec

        problem = check_model_spec(self.name)
        _check(problem is None, f"{key}.name", problem or "")


@dataclass
class TrackingConfig:
    """MLflow settings. ``uri`` is overridden by the ``MLFLOW_TRACKING_URI`` environment variable."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "valuedrift"
    check_timeout_s: float = 10.0

    def resolved_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.uri

    def validate(self, key: str) -> None:
        _check(bool(self.experiment.strip()), f"{key}.experiment", "must not be empty")
        _check(self.check_timeout_s > 0, f"{key}.check_timeout_s", "must be > 0")
        uri = self.resolved_uri()
        _check(
            uri.startswith(("sqlite:///", "http://", "https://", "file:", "postgresql", "mysql", "databricks"))
            or "://" not in uri,
            f"{key}.uri",
            f"{uri!r} is not a tracking URI MLflow understands (sqlite:///…, http://…, postgresql://…)",
        )


@dataclass
class EvalConfig:
    """Stance measurement (likelihood route, DESIGN.md).

    q(p) = softmax(ℓ / temperature), ℓ_s = mean token log-prob of statement s given the probe.
    ``trace_probes_per_topic`` probes per topic are scored at every checkpoint; phase ends (the first and
    last checkpoint of a run) score ``phase_probes_per_topic`` (``0`` = every annotated probe).
    """

    route: Literal["likelihood"] = "likelihood"
    temperature: float = 1.0
    batch_size: int = 16
    trace_probes_per_topic: int = 4
    phase_probes_per_topic: int = 0
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    prompt_format: Literal["chat", "plain"] = "chat"
    system_prompt: str | None = None
    bootstrap: int = 1000
    ci: float = 0.95

    def validate(self, key: str) -> None:
        _check(self.temperature > 0, f"{key}.temperature", f"must be > 0, got {self.temperature}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.trace_probes_per_topic >= 1, f"{key}.trace_probes_per_topic", "must be >= 1")
        _check(self.phase_probes_per_topic >= 0, f"{key}.phase_probes_per_topic", "must be >= 0 (0 = all)")
        _check(bool(self.splits), f"{key}.splits", "must list at least one split")
        for i, s in enumerate(self.splits):
            _check(s in SPLITS, f"{key}.splits[{i}]", f"{s!r} is not one of {', '.join(SPLITS)}")
        _check(self.bootstrap >= 100, f"{key}.bootstrap", "must be >= 100 resamples")
        _check(0.5 < self.ci < 1, f"{key}.ci", f"must lie in (0.5, 1), got {self.ci}")


@dataclass
class CorpusMix:
    """One SFT corpus: ``rows`` rows, ``value_share`` of them value-laden, with stance shares ``mix``."""

    rows: int = 400
    value_share: float = 0.4
    mix: dict[str, float] = field(default_factory=lambda: {"support": 0.15, "neutral": 0.7, "oppose": 0.15})

    def validate(self, key: str) -> None:
        _check(self.rows >= 8, f"{key}.rows", f"must be >= 8, got {self.rows}")
        _check(0 <= self.value_share <= 1, f"{key}.value_share", f"must lie in [0, 1], got {self.value_share}")
        for s, w in self.mix.items():
            _check(s in STANCES, f"{key}.mix.{s}", f"unknown stance; allowed: {', '.join(STANCES)}")
            _check(w >= 0, f"{key}.mix.{s}", "must be >= 0")
        _check(abs(sum(self.mix.values()) - 1) < 1e-6, f"{key}.mix", f"shares must sum to 1, got {sum(self.mix.values())}")


@dataclass
class PreferenceSetConfig:
    """A synthetic value-gap preference set (DESIGN.md "value gap").

    ``gap`` = share of pairs where chosen takes ``target`` and rejected the opposite stance; in the other
    pairs chosen and rejected share a stance and differ in style only. ``target`` is a stance, or the
    condition ``reinforce`` / ``reverse`` resolved from the SFT checkpoint's measured profile.
    """

    target: str = "oppose"
    gap: float = 1.0
    pairs: int = 64
    topics: list[str] = field(default_factory=list)
    chosen_styles: list[str] = field(default_factory=lambda: ["reasoned", "conversational"])
    rejected_styles: list[str] = field(default_factory=lambda: ["brief"])

    def validate(self, key: str) -> None:
        allowed = (*STANCES, "reinforce", "reverse")
        _check(self.target in allowed, f"{key}.target", f"{self.target!r} is not one of {', '.join(allowed)}")
        _check(0 <= self.gap <= 1, f"{key}.gap", f"must lie in [0, 1], got {self.gap}")
        _check(self.pairs >= 1, f"{key}.pairs", f"must be >= 1, got {self.pairs}")
        from valuedrift.data.schemas import STYLES, TOPIC_SLUGS

        for i, t in enumerate(self.topics):
            _check(t in TOPIC_SLUGS, f"{key}.topics[{i}]", f"unknown topic {t!r}; allowed: {', '.join(TOPIC_SLUGS)}")
        for name in ("chosen_styles", "rejected_styles"):
            styles = getattr(self, name)
            _check(bool(styles), f"{key}.{name}", "must list at least one style")
            for i, s in enumerate(styles):
                _check(s in STYLES, f"{key}.{name}[{i}]", f"unknown style {s!r}; allowed: {', '.join(STYLES)}")


@dataclass
class PrepareDataConfig:
    """Inputs of the ``prepare_data`` stage: the SFT corpora and preference sets to build."""

    corpora: dict[str, CorpusMix] = field(
        default_factory=lambda: {
            "neutral_heavy": CorpusMix(400, 0.4, {"support": 0.15, "neutral": 0.7, "oppose": 0.15}),
            "support_heavy": CorpusMix(400, 0.4, {"support": 0.65, "neutral": 0.2, "oppose": 0.15}),
        }
    )
    preference_sets: dict[str, PreferenceSetConfig] = field(
        default_factory=lambda: {"value_gap": PreferenceSetConfig()}
    )

    def validate(self, key: str) -> None:
        _check(bool(self.corpora), f"{key}.corpora", "must define at least one corpus")
        _check(bool(self.preference_sets), f"{key}.preference_sets", "must define at least one preference set")


@dataclass
class TrainConfig:
    """Hyperparameters shared by the training stages (TRL / transformers TrainingArguments names)."""

    max_steps: int = 30
    learning_rate: float = 5e-5
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    eval_every: int = 10
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    weight_decay: float = 0.0

    def validate(self, key: str) -> None:
        _check(self.max_steps >= 1, f"{key}.max_steps", f"must be >= 1, got {self.max_steps}")
        _check(0 < self.learning_rate < 1, f"{key}.learning_rate", f"must lie in (0, 1), got {self.learning_rate}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.grad_accum >= 1, f"{key}.grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(self.max_length >= 16, f"{key}.max_length", f"must be >= 16, got {self.max_length}")
        _check(self.eval_every >= 1, f"{key}.eval_every", f"must be >= 1 (steps between evaluations), got {self.eval_every}")
        _check(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", "must lie in [0, 1)")
        allowed = ("constant", "linear", "cosine", "constant_with_warmup")
        _check(self.lr_scheduler in allowed, f"{key}.lr_scheduler", f"{self.lr_scheduler!r} is not one of {', '.join(allowed)}")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")


@dataclass
class SFTConfig(TrainConfig):
    """The ``sft`` stage: which corpus, and the training hyperparameters."""

    corpus: str = "neutral_heavy"


@dataclass
class POConfig(TrainConfig):
    """The ``po`` stage: algorithms × preference sets, all from the same SFT checkpoint.

    ``hparams.<algorithm>`` holds that algorithm's own hyperparameters (e.g. ``dpo: {beta: 0.1,
    loss_type: [sigmoid]}``); names and ranges are declared in ``valuedrift.train.algorithms``.
    """

    algorithms: list[str] = field(default_factory=lambda: ["dpo"])
    preference_sets: list[str] = field(default_factory=lambda: ["value_gap"])
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_steps: int = 20
    learning_rate: float = 5e-6
    eval_every: int = 5

    def validate(self, key: str) -> None:
        super().validate(key)
        _check(bool(self.algorithms), f"{key}.algorithms", "must list at least one algorithm")
        from valuedrift.train.algorithms import ALGORITHMS

        for i, a in enumerate(self.algorithms):
            _check(a in ALGORITHMS, f"{key}.algorithms[{i}]", f"unknown algorithm {a!r}; valid: {', '.join(ALGORITHMS)}")
        for a, given in self.hparams.items():
            _check(a in ALGORITHMS, f"{key}.hparams.{a}", f"unknown algorithm; valid: {', '.join(ALGORITHMS)}")
            _check(isinstance(given, dict), f"{key}.hparams.{a}", "expected a mapping of hyperparameters")
            ALGORITHMS[a].resolve_hparams(given, f"{key}.hparams.{a}")
        _check(bool(self.preference_sets), f"{key}.preference_sets", "must list at least one preference set")

    def algorithm_hparams(self, name: str) -> dict[str, Any]:
        from valuedrift.train.algorithms import ALGORITHMS

        return ALGORITHMS[name].resolve_hparams(self.hparams.get(name), f"po.hparams.{name}")


@dataclass
class DriftConfig:
    """The ``drift`` stage. Drift time uses the CI level ``eval.ci``; see drift.py for the formulas."""

    stances: list[str] = field(default_factory=lambda: list(STANCES))

    def validate(self, key: str) -> None:
        for i, s in enumerate(self.stances):
            _check(s in STANCES, f"{key}.stances[{i}]", f"unknown stance {s!r}; allowed: {', '.join(STANCES)}")


@dataclass
class Params:
    """All of params.yaml."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prepare_data: PrepareDataConfig = field(default_factory=PrepareDataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    po: POConfig = field(default_factory=POConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)

    def validate(self) -> None:
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                _validate_tree(value, f.name)
        _check(
            self.sft.corpus in self.prepare_data.corpora,
            "sft.corpus",
            f"{self.sft.corpus!r} is not a corpus in prepare_data.corpora ({', '.join(self.prepare_data.corpora)})",
        )
        for i, name in enumerate(self.po.preference_sets):
            _check(
                name in self.prepare_data.preference_sets,
                f"po.preference_sets[{i}]",
                f"{name!r} is not defined in prepare_data.preference_sets ({', '.join(self.prepare_data.preference_sets)})",
            )


def _validate_tree(obj: Any, key: str) -> None:
    """Run ``validate`` on a dataclass and every dataclass it holds (also inside dicts)."""
    if hasattr(obj, "validate"):
        obj.validate(key)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate_tree(value, f"{key}.{f.name}")
        elif isinstance(value, dict):
            for k, v in value.items():
                if dataclasses.is_dataclass(v):
                    _validate_tree(v, f"{key}.{f.name}.{k}")


# --------------------------------------------------------------------------------------------------
# Parsing: dict -> dataclasses, with type checks that name the key
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"{value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 5e-5 as a string; accept numeric strings
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(key, f"unsupported type {tp}")  # pragma: no cover - a programming error


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    where = key or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        k = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(k, f"unknown key; allowed keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name in names & set(data):
        k = f"{key}.{name}" if key else name
        kwargs[name] = _coerce(data[name], hints[name], k)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config object (for logging as MLflow params)."""
    return dataclasses.asdict(obj)


def parse_params(data: dict[str, Any]) -> Params:
    params = from_dict(Params, data)
    params.validate()
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


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become comma-joined strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = v
    return out
