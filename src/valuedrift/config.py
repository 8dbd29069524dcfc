"""Typed, validated parameters.

``params.yaml`` is parsed once into the dataclasses below. Every check runs before any model is loaded;
an invalid value raises :class:`ConfigError` naming the dotted key (``sft.learning_rate``) and what is
allowed. Unknown keys are errors too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from valuedrift.redaction import redact

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


def _check_defined(name: str, defined: Any, key: str, where: str) -> None:
    """``name`` (the value at ``key``) must be one of ``defined`` (a list or the keys of a mapping)."""
    _check(name in defined, key, f"{name!r} is not defined in {where} ({', '.join(defined) or 'none'})")


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
        head = Path(self.name).parts[0] if "/" in self.name else None
        _check(
            head is None or not Path(head).is_dir() or Path(self.name).exists(),
            f"{key}.name",
            f"local model path {self.name!r} does not exist (not read as a hub id org/name, since {head!r} is a local folder)",
        )


@dataclass
class TrackingConfig:
    """MLflow settings. ``uri`` is overridden by the ``MLFLOW_TRACKING_URI`` environment variable."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "valuedrift"
    check_timeout_s: float = 10.0
    # an HTTP server that dies mid-run must not stall training for minutes (MLflow's own default is 7
    # retries with exponential backoff, ~4 min per call): after these, the run continues disk-only
    http_retries: int = 2
    http_timeout_s: int = 30

    def resolved_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.uri

    def validate(self, key: str) -> None:
        _check(bool(self.experiment.strip()), f"{key}.experiment", "must not be empty")
        _check(self.check_timeout_s > 0, f"{key}.check_timeout_s", f"must be > 0 seconds, got {self.check_timeout_s}")
        _check(self.http_retries >= 0, f"{key}.http_retries", f"must be >= 0, got {self.http_retries}")
        _check(self.http_timeout_s >= 1, f"{key}.http_timeout_s", f"must be >= 1 second, got {self.http_timeout_s}")
        uri = self.resolved_uri()
        source = " (from $MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") else ""
        _check(
            uri.startswith(("sqlite:///", "http://", "https://", "file:", "postgresql", "mysql", "databricks"))
            or "://" not in uri,
            f"{key}.uri",
            f"{redact(uri)!r}{source} is not a tracking URI MLflow understands (sqlite:///…, http://…, postgresql://…)",
        )


JUDGE_KINDS: tuple[str, ...] = ("hf", "openai")


@dataclass
class JudgeConfig:
    """One stance judge (stance/judges.py): p_J(s | question, answer) from its label log-probs,
    renormalised over the three stances.

    ``kind: hf`` scores the label continuations with a local causal LM (``model`` = a local Hugging Face
    folder or a hub id); ``kind: openai`` asks an OpenAI-compatible ``/chat/completions`` endpoint at
    ``base_url`` for the first answer token's ``top_logprobs``; the API key is read from the environment
    variable named by ``api_key_env`` (never from params, never logged). ``template`` is the judge prompt,
    kept as data (YAML). ``calibrate`` divides by the judge's label prior on a content-free input.
    """

    kind: str = "hf"
    model: str = "models/base"
    template: str = "data/judges/stance_judge.yaml"
    calibrate: bool = False
    batch_size: int = 8  # hf: label requests per forward pass
    base_url: str | None = None  # openai: http://host:port/v1
    api_key_env: str | None = None  # openai: name of the environment variable holding the key; null = no key
    top_logprobs: int = 20  # openai: alternatives returned for the first answer token (OpenAI allows <= 20)
    timeout_s: float = 60.0  # openai: per request
    max_retries: int = 2  # openai: retries on connection errors and 5xx/429 answers
    concurrency: int = 1  # openai: requests in flight

    def validate(self, key: str) -> None:
        _check(self.kind in JUDGE_KINDS, f"{key}.kind", f"{self.kind!r} is not one of {', '.join(JUDGE_KINDS)}")
        _check(bool(self.model.strip()), f"{key}.model", "must not be empty")
        _check(bool(self.template.strip()), f"{key}.template", "must name a judge template file")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(1 <= self.top_logprobs <= 20, f"{key}.top_logprobs", f"must lie in [1, 20], got {self.top_logprobs}")
        _check(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")
        _check(self.max_retries >= 0, f"{key}.max_retries", "must be >= 0")
        _check(self.concurrency >= 1, f"{key}.concurrency", "must be >= 1")
        if self.kind == "openai":
            _check(
                bool(self.base_url) and str(self.base_url).startswith(("http://", "https://")),
                f"{key}.base_url",
                f"an openai judge needs the endpoint's base URL (http://host:port/v1), got {self.base_url!r}",
            )
        if self.api_key_env is not None:
            _check(
                self.api_key_env.replace("_", "").isalnum(),
                f"{key}.api_key_env",
                "must be the NAME of an environment variable (letters, digits, _), not the key itself",
            )


@dataclass
class PaperRouteConfig:
    """Paper route (stance/paper_route.py): K answers y_k ~ π(·|p) per probe, sampled at ``temperature``
    (top-k off, nucleus ``top_p``) with at most ``max_new_tokens`` new tokens, judged by ``judge``;
    q(p) = (1/K) Σ_k p_J(·|p, y_k). ``batch_size`` probes share one ``generate`` call (× K sequences).
    ``probes_per_topic`` probes per (split, topic) are evaluated by ``valuedrift eval --route paper``.
    """

    k: int = 5
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 8
    probes_per_topic: int = 1
    judge: str = "smollm2"

    def validate(self, key: str) -> None:
        _check(self.k >= 1, f"{key}.k", f"must be >= 1 sampled answer per probe, got {self.k}")
        _check(self.temperature > 0, f"{key}.temperature", f"must be > 0 (the route samples), got {self.temperature}")
        _check(0 < self.top_p <= 1, f"{key}.top_p", f"must lie in (0, 1], got {self.top_p}")
        _check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.probes_per_topic >= 0, f"{key}.probes_per_topic", "must be >= 0 (0 = all)")


ROUTES: tuple[str, ...] = ("likelihood", "paper")


@dataclass
class EvalConfig:
    """Stance measurement (DESIGN.md).

    Likelihood route: q(p) = softmax(ℓ / temperature), ℓ_s = mean token log-prob of statement s given the
    probe. ``trace_probes_per_topic`` probes per topic are scored at every checkpoint; phase ends (the first
    and last checkpoint of a run) score ``phase_probes_per_topic`` (``0`` = every annotated probe). Both
    subsets are drawn with ``probe_seed`` (``None`` = the top-level ``seed``), which every training seed of
    ``seeds`` shares, so seeds differ by training noise only and are compared on the same probes.
    Paper route: ``paper`` (sampling + judge), with the judges defined in ``judges``. ``route`` is the
    default route of ``valuedrift eval``. ``reference_profiles`` is a folder of reference stance profiles
    (JSON) for the alignment metrics.
    """

    route: Literal["likelihood", "paper"] = "likelihood"
    temperature: float = 1.0
    batch_size: int = 16
    trace_probes_per_topic: int = 4
    phase_probes_per_topic: int = 0
    probe_seed: int | None = None
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    prompt_format: Literal["chat", "plain"] = "chat"
    system_prompt: str | None = None
    bootstrap: int = 1000
    ci: float = 0.95
    capability_rows: int = 40
    paper: PaperRouteConfig = field(default_factory=PaperRouteConfig)
    judges: dict[str, JudgeConfig] = field(default_factory=lambda: {"smollm2": JudgeConfig()})
    reference_profiles: str = "data/reference_profiles"

    def validate(self, key: str) -> None:
        _check_defined(self.paper.judge, self.judges, f"{key}.paper.judge", f"{key}.judges")
        _check(self.temperature > 0, f"{key}.temperature", f"must be > 0, got {self.temperature}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.trace_probes_per_topic >= 1, f"{key}.trace_probes_per_topic", "must be >= 1")
        _check(self.phase_probes_per_topic >= 0, f"{key}.phase_probes_per_topic", "must be >= 0 (0 = all)")
        _check(self.probe_seed is None or self.probe_seed >= 0, f"{key}.probe_seed", f"must be null or >= 0, got {self.probe_seed}")
        _check(bool(self.splits), f"{key}.splits", "must list at least one split")
        for i, s in enumerate(self.splits):
            _check(s in SPLITS, f"{key}.splits[{i}]", f"{s!r} is not one of {', '.join(SPLITS)}")
        _check(self.bootstrap >= 100, f"{key}.bootstrap", "must be >= 100 resamples")
        _check(self.capability_rows >= 0, f"{key}.capability_rows", "must be >= 0 (0 = no capability probe)")
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
class LMGeneratorConfig:
    """The LM generator backend of a preference set (``generator: hf | openai``; data/lm_generator.py).

    For each selected dev question q, stance s and style y, ``candidates`` answers are sampled from
    ``model`` with a prompt asking for stance s in style y; a judge gives p_J(·|q, answer) and an answer is
    kept iff argmax p_J = s and p_J(s|q, answer) >= ``min_judge_prob``. The kept answers form a response
    bank from which pairs are composed exactly as from the authored bank.
    """

    model: str = ""  # hf: local HF folder or hub id; openai: the model name the endpoint serves
    base_url: str | None = None  # openai: http://host:port/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key (may be unset)
    questions: int = 0  # seeded subset of dev questions to write answers for; 0 = every one in `topics`
    candidates: int = 2  # sampled answers per (question, stance, style)
    temperature: float = 0.7
    max_new_tokens: int = 96
    batch_size: int = 8  # prompts per generate() call (hf)
    min_judge_prob: float = 0.0  # also require p_J(requested stance) >= this
    timeout_s: float = 60.0  # openai: per-request timeout
    judge: str = "smollm2"  # name of the judge in eval.judges that labels and filters the answers

    def validate(self, key: str) -> None:
        _check(self.questions >= 0, f"{key}.questions", f"must be >= 0 (0 = all), got {self.questions}")
        _check(self.candidates >= 1, f"{key}.candidates", f"must be >= 1, got {self.candidates}")
        _check(self.temperature > 0, f"{key}.temperature", f"must be > 0 (answers are sampled), got {self.temperature}")
        _check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0 <= self.min_judge_prob <= 1, f"{key}.min_judge_prob", f"must lie in [0, 1], got {self.min_judge_prob}")
        _check(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")
        _check(bool(self.judge.strip()), f"{key}.judge", "must name a judge in eval.judges")


GENERATORS: tuple[str, ...] = ("bank", "hf", "openai")


@dataclass
class PreferenceSetConfig:
    """A synthetic value-gap preference set (DESIGN.md "value gap"; data/preferences.py).

    ``gap`` = share of pairs where chosen takes ``target`` and rejected the opposite stance; in the other
    pairs chosen and rejected share a stance and differ in style only. ``target`` is a stance, or the
    condition ``reinforce`` / ``reverse`` resolved from the SFT checkpoint's measured profile.
    Style variation: a gap pair draws one style from ``gap_styles`` for both answers (only the stance
    differs); a style pair draws chosen from ``chosen_styles`` and rejected from ``rejected_styles``.
    ``generator`` picks where answers come from: the authored response bank, or an LM (``lm``).
    """

    target: str = "oppose"
    gap: float = 1.0
    pairs: int = 64
    topics: list[str] = field(default_factory=list)
    gap_styles: list[str] = field(default_factory=lambda: ["brief", "reasoned", "conversational"])
    chosen_styles: list[str] = field(default_factory=lambda: ["reasoned", "conversational"])
    rejected_styles: list[str] = field(default_factory=lambda: ["brief"])
    generator: str = "bank"
    lm: LMGeneratorConfig = field(default_factory=LMGeneratorConfig)

    def validate(self, key: str) -> None:
        allowed = (*STANCES, "reinforce", "reverse")
        _check(self.target in allowed, f"{key}.target", f"{self.target!r} is not one of {', '.join(allowed)}")
        _check(0 <= self.gap <= 1, f"{key}.gap", f"must lie in [0, 1], got {self.gap}")
        _check(self.pairs >= 1, f"{key}.pairs", f"must be >= 1, got {self.pairs}")
        from valuedrift.data.schemas import STYLES, TOPIC_SLUGS

        for i, t in enumerate(self.topics):
            _check(t in TOPIC_SLUGS, f"{key}.topics[{i}]", f"unknown topic {t!r}; allowed: {', '.join(TOPIC_SLUGS)}")
            _check(t not in self.topics[:i], f"{key}.topics[{i}]", f"topic {t!r} is listed twice")
        for name in ("gap_styles", "chosen_styles", "rejected_styles"):
            styles = getattr(self, name)
            _check(bool(styles), f"{key}.{name}", "must list at least one style")
            for i, s in enumerate(styles):
                _check(s in STYLES, f"{key}.{name}[{i}]", f"unknown style {s!r}; allowed: {', '.join(STYLES)}")
        _check(self.generator in GENERATORS, f"{key}.generator", f"{self.generator!r} is not one of {', '.join(GENERATORS)}")
        if self.generator != "bank":
            _check(bool(self.lm.model.strip()), f"{key}.lm.model", f"generator {self.generator!r} needs a model")
        if self.generator == "openai":
            _check(
                bool(self.lm.base_url) and str(self.lm.base_url).startswith(("http://", "https://")),
                f"{key}.lm.base_url",
                f"generator 'openai' needs the endpoint's base URL (http://host:port/v1), got {self.lm.base_url!r}",
            )


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
    gradient_checkpointing: bool = False  # trades compute for memory: on for big models on GPUs

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
    """The ``sft`` stage: which corpora to train on (one run each; a DVC matrix), and the hyperparameters."""

    corpora: list[str] = field(default_factory=lambda: ["neutral_heavy"])

    def validate(self, key: str) -> None:
        super().validate(key)
        _check(bool(self.corpora), f"{key}.corpora", "must list at least one corpus")
        for i, c in enumerate(self.corpora):
            _check(c not in self.corpora[:i], f"{key}.corpora[{i}]", f"corpus {c!r} is listed twice")


@dataclass
class POConfig(TrainConfig):
    """The ``po`` stage: algorithms × preference sets, all from the same SFT checkpoint.

    ``hparams.<algorithm>`` holds that algorithm's own hyperparameters (e.g. ``dpo: {beta: 0.1,
    loss_type: [sigmoid]}``); names and ranges are declared in ``valuedrift.train.algorithms``.
    ``start_from`` names the SFT run (an entry of ``sft.corpora``) whose final checkpoint every preference
    run starts from, and whose measured profile resolves ``reinforce``/``reverse`` targets.
    """

    start_from: str = "neutral_heavy"
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
            _check(a not in self.algorithms[:i], f"{key}.algorithms[{i}]", f"algorithm {a!r} is listed twice")
        for a, given in self.hparams.items():
            _check(a in ALGORITHMS, f"{key}.hparams.{a}", f"unknown algorithm; valid: {', '.join(ALGORITHMS)}")
            _check(isinstance(given, dict), f"{key}.hparams.{a}", "expected a mapping of hyperparameters")
            ALGORITHMS[a].resolve_hparams(given, f"{key}.hparams.{a}")
        for a in self.algorithms:
            if ALGORITHMS[a].check is not None:  # cross-checks of hparams against this section
                ALGORITHMS[a].check(self.algorithm_hparams(a), self, f"{key}.hparams.{a}")
        _check(bool(self.preference_sets), f"{key}.preference_sets", "must list at least one preference set")

    def algorithm_hparams(self, name: str) -> dict[str, Any]:
        from valuedrift.train.algorithms import ALGORITHMS

        return ALGORITHMS[name].resolve_hparams(self.hparams.get(name), f"po.hparams.{name}")


@dataclass
class DriftConfig:
    """The ``drift`` stage. Drift time uses the CI level ``eval.ci``; see drift.py for the formulas."""

    stances: list[str] = field(default_factory=lambda: list(STANCES))

    def validate(self, key: str) -> None:
        _check(bool(self.stances), f"{key}.stances", f"must list at least one of {', '.join(STANCES)}")
        for i, s in enumerate(self.stances):
            _check(s in STANCES, f"{key}.stances[{i}]", f"unknown stance {s!r}; allowed: {', '.join(STANCES)}")
            _check(s not in self.stances[:i], f"{key}.stances[{i}]", f"stance {s!r} is listed twice")


@dataclass
class JudgeEvalConfig:
    """The ``judge_eval`` stage: accuracy of each judge in ``judges`` (names from ``eval.judges``) on the
    labelled stance set, and agreement between the likelihood route and each judge (paper route, settings
    ``eval.paper``) on ``agreement_probes_per_topic`` probes per (split, topic) of one checkpoint.
    """

    labelled: str = "data/stance_labelled/stance_labelled.jsonl"
    judges: list[str] = field(default_factory=lambda: ["smollm2"])
    agreement_probes_per_topic: int = 1

    def validate(self, key: str) -> None:
        _check(bool(self.labelled.strip()), f"{key}.labelled", "must name the labelled stance file")
        _check(bool(self.judges), f"{key}.judges", "must list at least one judge")
        _check(self.agreement_probes_per_topic >= 0, f"{key}.agreement_probes_per_topic", "must be >= 0 (0 = skip agreement)")


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
            _check(
                self.low is None and self.high is None and self.step is None and not self.log,
                key,
                "give either choices or a low/high range, not both",
            )
            _check(bool(self.choices), f"{key}.choices", "empty: list at least one value")
            return
        _check(self.low is not None and self.high is not None, key, "needs low and high, or choices")
        _check(self.low != self.high, key, f"empty range: low = high = {self.low} (to fix a value use choices: [{self.low}])")
        _check(self.low < self.high, key, f"inverted range: low {self.low} > high {self.high}")
        if self.log:
            _check(self.low > 0, f"{key}.low", f"a log range needs low > 0, got {self.low}")
            _check(self.step is None, f"{key}.step", "log and step cannot be combined")
        if self.step is not None:
            _check(0 < self.step <= self.high - self.low, f"{key}.step", f"must lie in (0, high - low], got {self.step}")


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
        _check(bool(self.study.strip()), f"{key}.study", "must not be empty")
        _check(self.n_trials >= 1, f"{key}.n_trials", f"must be >= 1, got {self.n_trials}")
        _check(self.timeout_s is None or self.timeout_s > 0, f"{key}.timeout_s", "must be > 0 seconds, or null for no limit")
        _check(self.workers >= 1, f"{key}.workers", f"must be >= 1, got {self.workers}")
        _check(self.sampler in TUNE_SAMPLERS, f"{key}.sampler", f"{self.sampler!r} is not one of {', '.join(TUNE_SAMPLERS)}")
        _check(self.startup_trials >= 0, f"{key}.startup_trials", "must be >= 0")
        _check(self.population_size >= 2, f"{key}.population_size", "must be >= 2")
        _check(self.pruner_startup_trials >= 0, f"{key}.pruner_startup_trials", "must be >= 0")
        _check(self.pruner_warmup_steps >= 0, f"{key}.pruner_warmup_steps", "must be >= 0")
        _check(self.heartbeat_s >= 1, f"{key}.heartbeat_s", f"must be >= 1 second, got {self.heartbeat_s}")
        _check(bool(self.objectives), f"{key}.objectives", "must list at least one objective")
        for i, o in enumerate(self.objectives):
            _check(o in TUNE_OBJECTIVES, f"{key}.objectives[{i}]", f"{o!r} is not one of {', '.join(TUNE_OBJECTIVES)}")
            _check(o not in self.objectives[:i], f"{key}.objectives[{i}]", f"{o!r} is listed twice")
        _check(self.target in ("auto", *STANCES), f"{key}.target", f"{self.target!r} is not auto or one of {', '.join(STANCES)}")
        _check(self.split in (*SPLITS, "all"), f"{key}.split", f"{self.split!r} is not one of {', '.join(SPLITS)}, all")
        _check(
            "align" not in self.objectives or self.reference is not None,
            f"{key}.reference",
            "objective 'align' needs a reference profile (inline {support, neutral, oppose} or a file)",
        )
        from valuedrift.sweep_space import check_tune

        check_tune(self, key)


@dataclass
class Params:
    """All of params.yaml."""

    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    model: ModelConfig = field(default_factory=ModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    prepare_data: PrepareDataConfig = field(default_factory=PrepareDataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    po: POConfig = field(default_factory=POConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    judge_eval: JudgeEvalConfig = field(default_factory=JudgeEvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    @property
    def probe_seed(self) -> int:
        """Seed of the probe subsets (trace, phase, eval): ``eval.probe_seed``, else the top-level ``seed``."""
        return self.seed if self.eval.probe_seed is None else self.eval.probe_seed

    def validate(self) -> None:
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _check(bool(self.seeds), "seeds", "must list at least one training seed")
        for i, s in enumerate(self.seeds):
            _check(s >= 0, f"seeds[{i}]", f"must be >= 0, got {s}")
        _check(len(set(self.seeds)) == len(self.seeds), "seeds", f"must not repeat a seed, got {self.seeds}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                _validate_tree(value, f.name)
        for i, name in enumerate(self.sft.corpora):
            _check_defined(name, self.prepare_data.corpora, f"sft.corpora[{i}]", "prepare_data.corpora")
        _check_defined(self.po.start_from, self.sft.corpora, "po.start_from", "sft.corpora (the SFT runs)")
        for i, name in enumerate(self.judge_eval.judges):
            _check_defined(name, self.eval.judges, f"judge_eval.judges[{i}]", "eval.judges")
        for name, pref in self.prepare_data.preference_sets.items():
            if pref.generator != "bank":
                _check_defined(pref.lm.judge, self.eval.judges, f"prepare_data.preference_sets.{name}.lm.judge", "eval.judges")
        for i, name in enumerate(self.po.preference_sets):
            _check_defined(name, self.prepare_data.preference_sets, f"po.preference_sets[{i}]", "prepare_data.preference_sets")

        from valuedrift.sweep_space import check_tune_against_params  # tune keys that refer to other sections

        check_tune_against_params(self)


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
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
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
