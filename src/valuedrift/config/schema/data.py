"""Section ``prepare_data``: the SFT corpora and preference sets to build, authored or from real datasets
(``source``: :class:`DataSource`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from valuedrift.core.errors import check
from valuedrift.core.vocab import STANCES, STYLES

SFT_SOURCE_KINDS: tuple[str, ...] = ("wildchat", "alpaca", "jsonl")
PREFERENCE_SOURCE_KINDS: tuple[str, ...] = ("ultrafeedback", "hh-rlhf", "jsonl")
# each kind's split when ``split`` is unset (the hub datasets' own split names)
DEFAULT_SPLITS: dict[str, str] = {"wildchat": "train", "alpaca": "train", "jsonl": "train",
                                  "ultrafeedback": "train_prefs", "hh-rlhf": "train"}


@dataclass
class DataSource:
    """Rows read from a real dataset instead of composed from the authored bank (data/sources.py).

    ``kind`` is the format: for an SFT corpus ``wildchat`` (allenai/WildChat-1M), ``alpaca``
    (tatsu-lab/alpaca, or the original alpaca_data.json) or ``jsonl``; for a preference set
    ``ultrafeedback`` (HuggingFaceH4/ultrafeedback_binarized), ``hh-rlhf`` (Anthropic/hh-rlhf) or ``jsonl``.
    The formats are described in data/loaders/sft.py, data/loaders/preferences.py and data/loaders/jsonl.py
    (``jsonl``: SFT rows with ``prompt`` + ``completion`` or ``messages``; pairs with ``prompt``, ``chosen``,
    ``rejected``; strings or lists of ``{role, content}`` messages).

    ``path`` is a hub id (``org/name``), a local folder laid out like the hub repository, or one local
    file (.jsonl, .json, .parquet, .csv, optionally .gz). ``revision`` pins a hub dataset's git revision
    (a commit sha or tag; passed to ``datasets.load_dataset(..., revision=)``); a hub id without one reads
    whatever the hub holds today, which is allowed but logged as a warning naming the key. ``split`` is the
    split to read (unset: ``train``, UltraFeedback ``train_prefs``; a single local file is read whole),
    ``data_dir`` a subfolder of the dataset (HH-RLHF subsets: ``harmless-base``, ``helpful-base``, …; unset =
    all). ``limit`` stops reading once that many rows (pairs) are kept (0 = read everything); ``sample``
    then keeps a seeded random subset of that many rows in their original order (0 = all; seeded from the
    top-level ``seed``; more than were read is an error). ``language`` (``wildchat`` only) keeps
    conversations in that language (null = any). ``judge`` names the entry of ``eval.judges`` that labels
    the rows' stances, since real data carries no stance labels: the gap analysis of a preference set, and
    the default of ``valuedrift stance-mix`` for a corpus (empty = ``eval.paper.judge``).
    """

    kind: str = ""
    path: str = ""
    revision: str | None = None
    split: str | None = None
    data_dir: str | None = None
    limit: int = 0
    sample: int = 0
    language: str | None = "English"
    judge: str = ""

    def check_kind(self, key: str, kinds: tuple[str, ...], what: str) -> None:
        """``kind`` is one of ``kinds`` (those a ``what`` can read)."""
        check(self.kind in kinds, f"{key}.kind", f"{self.kind!r} is not a {what} source; allowed: {', '.join(kinds)}")

    @property
    def resolved_split(self) -> str:
        return self.split or DEFAULT_SPLITS.get(self.kind, "train")

    def validate(self, key: str) -> None:
        check(bool(self.path.strip()), f"{key}.path", "must name a hub id (org/name) or a local file or folder")
        check(self.revision is None or bool(self.revision.strip()), f"{key}.revision", "must not be empty (null = unpinned)")
        check(self.split is None or bool(self.split.strip()), f"{key}.split", "must not be empty (null = the kind's default)")
        check(self.limit >= 0, f"{key}.limit", f"must be >= 0 (0 = all), got {self.limit}")
        check(self.sample >= 0, f"{key}.sample", f"must be >= 0 (0 = all), got {self.sample}")
        check(not self.limit or not self.sample or self.sample <= self.limit, f"{key}.sample",
              f"samples {self.sample} rows from at most limit = {self.limit}")
        check(self.kind == "wildchat" or self.language == "English" or self.language is None, f"{key}.language",
              f"only the wildchat kind filters by language, not {self.kind!r}")


def check_shares(shares: dict[str, float], key: str) -> None:
    """Stance shares: every key a stance, every share >= 0, and Σ shares = 1 (to 1e-6)."""
    for s, w in shares.items():
        check(s in STANCES, f"{key}.{s}", f"unknown stance; allowed: {', '.join(STANCES)}")
        check(w >= 0, f"{key}.{s}", "must be >= 0")
    check(abs(sum(shares.values()) - 1) < 1e-6, key, f"shares must sum to 1, got {sum(shares.values())}")


@dataclass
class CorpusMix:
    """An SFT corpus: ``rows`` rows, a share ``value_share`` of them value-laden, with stance shares ``mix``
    (composed from the authored bank, data/corpora.py).

    With ``source`` set the rows come from that dataset instead (:class:`DataSource`; kinds wildchat,
    alpaca, jsonl) and ``rows``, ``value_share`` and ``mix`` are unused: the corpus is every row the source
    yields (``source.limit`` / ``source.sample`` bound it). Such rows carry no authored stance labels, so
    the corpus has no ``corpus_<name>`` reference profile; ``valuedrift stance-mix`` measures its mix.
    """

    rows: int = 400
    value_share: float = 0.4
    mix: dict[str, float] = field(default_factory=lambda: {"support": 0.15, "neutral": 0.7, "oppose": 0.15})
    source: DataSource | None = None

    def validate(self, key: str) -> None:
        if self.source is not None:
            self.source.check_kind(f"{key}.source", SFT_SOURCE_KINDS, "SFT corpus")
        check(self.rows >= 8, f"{key}.rows", f"must be >= 8, got {self.rows}")
        check(0 <= self.value_share <= 1, f"{key}.value_share", f"must lie in [0, 1], got {self.value_share}")
        check_shares(self.mix, f"{key}.mix")


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


GENERATORS: tuple[str, ...] = ("bank", "hf", "openai", "source")


@dataclass
class PreferenceSetConfig:
    """A synthetic value-gap preference set (docs/definitions.md "Value gap"; data/preferences.py).

    ``gap`` = share of pairs where chosen takes ``target`` and rejected the opposite stance; in the other
    pairs chosen and rejected share a stance and differ in style only. ``target`` is a stance, or the
    condition ``reinforce`` / ``reverse`` resolved from the SFT checkpoint's measured profile.
    Style variation: a gap pair draws one style from ``gap_styles`` for both answers (only the stance
    differs); a style pair draws chosen from ``chosen_styles`` and rejected from ``rejected_styles``.
    The stance a style pair shares is cycled over all three (a balanced set) unless ``style_stances`` gives
    shares (summing to 1): then round(share · n_style) pairs take each stance (largest remainder).
    ``generator`` picks where answers come from: the authored response bank, or an LM (``lm``).

    ``generator: source`` reads the pairs of a real dataset instead (``source``: :class:`DataSource`;
    kinds ultrafeedback, hh-rlhf, jsonl): ``target``, ``gap``, ``pairs``, ``topics``, the styles and ``lm``
    are then unused; the set's size is set by ``source.limit`` / ``source.sample``. Its gap analysis labels
    both answers with the judge ``source.judge`` (default ``eval.paper.judge``), unless every pair carries
    ``chosen_stance`` / ``rejected_stance`` labels (a jsonl file may).
    """

    target: str = "oppose"
    gap: float = 1.0
    pairs: int = 64
    topics: list[str] = field(default_factory=list)
    gap_styles: list[str] = field(default_factory=lambda: ["brief", "reasoned", "conversational"])
    chosen_styles: list[str] = field(default_factory=lambda: ["reasoned", "conversational"])
    rejected_styles: list[str] = field(default_factory=lambda: ["brief"])
    style_stances: dict[str, float] | None = None  # shares of the style pairs' shared stance; None = cycled, balanced
    generator: str = "bank"
    lm: LMGeneratorConfig = field(default_factory=LMGeneratorConfig)
    source: DataSource | None = None

    def validate(self, key: str) -> None:
        check(self.generator in GENERATORS, f"{key}.generator", f"{self.generator!r} is not one of {', '.join(GENERATORS)}")
        check(self.generator != "source" or self.source is not None, f"{key}.source",
              "generator 'source' needs a source block (kind, path, …)")
        check(self.source is None or self.generator == "source", f"{key}.generator",
              f"a source block needs generator: source, got {self.generator!r}")
        if self.source is not None:
            self.source.check_kind(f"{key}.source", PREFERENCE_SOURCE_KINDS, "preference-set")
            return  # the synthetic settings below are unused
        allowed = (*STANCES, "reinforce", "reverse")
        check(self.target in allowed, f"{key}.target", f"{self.target!r} is not one of {', '.join(allowed)}")
        check(0 <= self.gap <= 1, f"{key}.gap", f"must lie in [0, 1], got {self.gap}")
        check(self.pairs >= 1, f"{key}.pairs", f"must be >= 1, got {self.pairs}")
        for i, t in enumerate(self.topics):  # that each is a topic of the probe bank: config.load
            check(t not in self.topics[:i], f"{key}.topics[{i}]", f"topic {t!r} is listed twice")
        if self.style_stances is not None:
            check_shares(self.style_stances, f"{key}.style_stances")
        for name in ("gap_styles", "chosen_styles", "rejected_styles"):
            styles = getattr(self, name)
            check(bool(styles), f"{key}.{name}", "must list at least one style")
            for i, s in enumerate(styles):
                check(s in STYLES, f"{key}.{name}[{i}]", f"unknown style {s!r}; allowed: {', '.join(STYLES)}")
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
