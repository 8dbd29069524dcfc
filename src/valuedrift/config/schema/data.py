"""Section ``prepare_data``: the SFT corpora and preference sets to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from valuedrift.core.errors import check
from valuedrift.core.vocab import STANCES, STYLES


@dataclass
class CorpusMix:
    """One SFT corpus: ``rows`` rows, ``value_share`` of them value-laden, with stance shares ``mix``."""

    rows: int = 400
    value_share: float = 0.4
    mix: dict[str, float] = field(default_factory=lambda: {"support": 0.15, "neutral": 0.7, "oppose": 0.15})

    def validate(self, key: str) -> None:
        check(self.rows >= 8, f"{key}.rows", f"must be >= 8, got {self.rows}")
        check(0 <= self.value_share <= 1, f"{key}.value_share", f"must lie in [0, 1], got {self.value_share}")
        for s, w in self.mix.items():
            check(s in STANCES, f"{key}.mix.{s}", f"unknown stance; allowed: {', '.join(STANCES)}")
            check(w >= 0, f"{key}.mix.{s}", "must be >= 0")
        check(abs(sum(self.mix.values()) - 1) < 1e-6, f"{key}.mix", f"shares must sum to 1, got {sum(self.mix.values())}")


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
        check(self.questions >= 0, f"{key}.questions", f"must be >= 0 (0 = all), got {self.questions}")
        check(self.candidates >= 1, f"{key}.candidates", f"must be >= 1, got {self.candidates}")
        check(self.temperature > 0, f"{key}.temperature", f"must be > 0 (answers are sampled), got {self.temperature}")
        check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(0 <= self.min_judge_prob <= 1, f"{key}.min_judge_prob", f"must lie in [0, 1], got {self.min_judge_prob}")
        check(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")
        check(bool(self.judge.strip()), f"{key}.judge", "must name a judge in eval.judges")


GENERATORS: tuple[str, ...] = ("bank", "hf", "openai")


@dataclass
class PreferenceSetConfig:
    """A synthetic value-gap preference set (docs/definitions.md "Value gap"; data/preferences.py).

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
        check(self.target in allowed, f"{key}.target", f"{self.target!r} is not one of {', '.join(allowed)}")
        check(0 <= self.gap <= 1, f"{key}.gap", f"must lie in [0, 1], got {self.gap}")
        check(self.pairs >= 1, f"{key}.pairs", f"must be >= 1, got {self.pairs}")
        for i, t in enumerate(self.topics):  # that each is a topic of the probe bank: config.load
            check(t not in self.topics[:i], f"{key}.topics[{i}]", f"topic {t!r} is listed twice")
        for name in ("gap_styles", "chosen_styles", "rejected_styles"):
            styles = getattr(self, name)
            check(bool(styles), f"{key}.{name}", "must list at least one style")
            for i, s in enumerate(styles):
                check(s in STYLES, f"{key}.{name}[{i}]", f"unknown style {s!r}; allowed: {', '.join(STYLES)}")
        check(self.generator in GENERATORS, f"{key}.generator", f"{self.generator!r} is not one of {', '.join(GENERATORS)}")
        if self.generator != "bank":
            check(bool(self.lm.model.strip()), f"{key}.lm.model", f"generator {self.generator!r} needs a model")
        if self.generator == "openai":
            check(
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
        check(bool(self.corpora), f"{key}.corpora", "must define at least one corpus")
        check(bool(self.preference_sets), f"{key}.preference_sets", "must define at least one preference set")
