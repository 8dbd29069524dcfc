"""Synthetic preference sets with a controlled value gap.

Given a target stance t, a gap g ∈ [0, 1] and n pairs:

- gap pairs (exactly n_gap = round(g·n)): chosen takes t, rejected the opposite stance ō(t)
  (ō(support) = oppose, ō(oppose) = support, ō(neutral) alternates support/oppose); both answers in the
  same style (drawn from ``gap_styles``), so the pair differs in stance only;
- style pairs (the other n_style = n − n_gap): chosen and rejected share a stance and differ in style
  only (chosen from ``chosen_styles``, rejected from ``rejected_styles``). The shared stance is cycled over
  all three (the set stays balanced) or, with ``style_stances`` = shares w_s, n_s = round(w_s·n_style)
  pairs take stance s (largest remainder, Σ_s n_s = n_style): e.g. the start model's own stance mix, so
  that the style pairs' answers say what the model already says.

Value gap on stance s: Δ_s = P(chosen = s) − P(rejected = s). Style pairs add nothing to any Δ_s, so on the
target Δ_t = n_gap / n exactly, and |Δ_t − g| ≤ 1/(2n) (rounding only). g = 0 gives a style-only set,
the role UltraFeedback / HH-RLHF play in the paper.

Questions: dev split only, from ``topics`` (all dev topics if empty). Every question is used once before
any is used twice (a seeded shuffled cycle), and gap pairs are spread over topics by largest remainder,
so each topic's own gap is g up to rounding too (n_gap,T = round-ish(g·n_T), Σ_T n_gap,T = n_gap).
Deterministic: the same (config, seed, bank, questions) give the same pairs in the same order.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from typing import Any

from valuedrift.config.schema.data import PreferenceSetConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES
from valuedrift.data.bank import ResponseBank
from valuedrift.data.corpora import apportion
from valuedrift.data.schemas import Probe

OPPOSITE = {"support": "oppose", "oppose": "support"}
CONDITIONS = ("reinforce", "reverse")


def set_seed(seed: int, name: str) -> int:
    """Seed of one preference set: a stable hash of (params seed, set name), so adding or renaming another
    set never changes this one's pairs (DVC keys each set by its own params)."""
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


def resolve_target(target: str, sft_profile: dict[str, float] | None, key: str = "target") -> str:
    """The stance a set pushes toward.

    An explicit stance is returned as is. For the named conditions, with f = argmax_s v_SFT(all)_s the
    stance the SFT checkpoint favours (its measured profile over every scored probe):
    ``reinforce`` = f; ``reverse`` = ō(f), and for a neutral-favouring model the less likely of
    support / oppose. Raises ConfigError naming ``key`` if a condition has no profile to read.
    """
    if target in STANCES:
        return target
    if target not in CONDITIONS:
        raise ConfigError(key, f"{target!r} is not one of {', '.join((*STANCES, *CONDITIONS))}")
    if sft_profile is None:
        raise ConfigError(
            key, f"{target!r} needs the SFT checkpoint's measured stance profile (run the sft stage first, "
            "or give an explicit stance)"
        )
    missing = [s for s in STANCES if s not in sft_profile]
    if missing:
        raise ConfigError(key, f"the SFT stance profile lacks {missing}")
    favoured = max(STANCES, key=lambda s: sft_profile[s])
    if target == "reinforce":
        return favoured
    if favoured == "neutral":
        return min(("support", "oppose"), key=lambda s: sft_profile[s])
    return OPPOSITE[favoured]


def question_pool(
    cfg: PreferenceSetConfig, questions: list[Probe], bank: ResponseBank | None, key: str
) -> list[Probe]:
    """Dev-split questions from ``cfg.topics`` (all topics if empty) with answers in every stance in
    ``bank`` (any dev question if ``bank`` is None: the LM backend has yet to write them).

    A listed topic without such a question (e.g. a held-out test topic) is an error naming
    ``<key>.topics[i]``; so is an empty pool.
    """
    have = set(bank.question_ids()) if bank is not None else {q.id for q in questions}
    dev = [q for q in questions if q.split == "dev" and q.id in have]
    for i, t in enumerate(cfg.topics):
        if not any(q.topic == t for q in dev):
            held_out = any(q.topic == t and q.split == "test" for q in questions)
            why = "it is a held-out (test-split) topic" if held_out else "the response bank has no answers for it"
            raise ConfigError(f"{key}.topics[{i}]", f"topic {t!r} has no dev-split question to draw from ({why})")
    pool = [q for q in dev if not cfg.topics or q.topic in cfg.topics]
    if not pool:
        raise ConfigError(f"{key}.topics", "no dev-split question with answers in every stance in this selection")
    return sorted(pool, key=lambda q: q.id)


def style_pair_stances(n_style: int, shares: dict[str, float] | None) -> list[str]:
    """The shared stance of each of ``n_style`` style pairs, before shuffling: cycled over all three stances
    when ``shares`` is None, else ``apportion(n_style, shares)`` pairs of each stance."""
    if shares is None:
        return [STANCES[k % len(STANCES)] for k in range(n_style)]
    counts = apportion(n_style, {s: shares.get(s, 0.0) for s in STANCES})
    return [s for s in STANCES for _ in range(counts[s])]


def _cycle(pool: list[Probe], n: int, rng: random.Random) -> list[Probe]:
    """n questions: shuffled passes over the pool, each question once per pass."""
    out: list[Probe] = []
    while len(out) < n:
        order = pool[:]
        rng.shuffle(order)
        out.extend(order[: n - len(out)])
    return out


def _answer(bank: ResponseBank, qid: int, stance: str, wanted: list[str], rng: random.Random) -> tuple[str, str]:
    """(style, text) for a stance, in one of the wanted styles when the bank has one (else any it has)."""
    have = bank.styles(qid, stance)
    style = rng.choice([y for y in wanted if y in have] or have)
    return style, bank.get(qid, stance, style)


def _gap_slots(topics: list[str], n_gap: int, rng: random.Random) -> set[int]:
    """Indices of the gap pairs: n_gap spread over topics by largest remainder, random within a topic."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(topics):
        by_topic[t].append(i)
    n = len(topics)
    per_topic = apportion(n_gap, {t: len(ix) / n for t, ix in by_topic.items()}) if n_gap else {}
    slots: set[int] = set()
    for t in sorted(by_topic):
        slots.update(rng.sample(by_topic[t], per_topic.get(t, 0)))
    return slots


def generate_pairs(
    cfg: PreferenceSetConfig, questions: list[Probe], bank: ResponseBank, seed: int, target: str, key: str = "preference_set"
) -> list[dict[str, Any]]:
    """Compose ``cfg.pairs`` pairs toward the stance ``target`` (module docstring for the construction).

    Each row: conversational ``prompt``/``chosen``/``rejected`` plus the labels the analyser reads
    (``chosen_stance``, ``rejected_stance``, styles, ``topic``, ``question_id``, ``kind`` = gap|style).
    """
    if target not in STANCES:
        raise ConfigError(f"{key}.target", f"must resolve to a stance ({', '.join(STANCES)}), got {target!r}")
    pool = question_pool(cfg, questions, bank, key)
    rng = random.Random(seed)
    chosen_qs = _cycle(pool, cfg.pairs, rng)
    n_gap = round(cfg.gap * cfg.pairs)
    gap_slots = _gap_slots([q.topic for q in chosen_qs], n_gap, rng)
    shared = style_pair_stances(cfg.pairs - n_gap, cfg.style_stances)
    rng.shuffle(shared)
    pairs, k_gap, k_style = [], 0, 0
    for i, q in enumerate(chosen_qs):
        if i in gap_slots:
            other = OPPOSITE.get(target) or ("support", "oppose")[k_gap % 2]
            k_gap += 1
            common = [y for y in cfg.gap_styles if y in bank.styles(q.id, target) and y in bank.styles(q.id, other)]
            if common:
                style = rng.choice(common)
                c_style, c_text = style, bank.get(q.id, target, style)
                r_style, r_text = style, bank.get(q.id, other, style)
            else:  # an LM-written bank may lack a shared style: take what it has, and say so
                c_style, c_text = _answer(bank, q.id, target, cfg.gap_styles, rng)
                r_style, r_text = _answer(bank, q.id, other, cfg.gap_styles, rng)
            c_stance, r_stance, kind = target, other, "gap"
        else:
            c_stance = r_stance = shared[k_style]
            k_style += 1
            c_style, c_text = _answer(bank, q.id, c_stance, cfg.chosen_styles, rng)
            # never the same answer on both sides: prefer a rejected style other than the chosen one
            r_wanted = [y for y in cfg.rejected_styles if y != c_style] or cfg.rejected_styles
            r_style, r_text = _answer(bank, q.id, r_stance, r_wanted, rng)
            kind = "style"
        pairs.append(
            {
                "prompt": [{"role": "user", "content": q.question}],
                "chosen": [{"role": "assistant", "content": c_text}],
                "rejected": [{"role": "assistant", "content": r_text}],
                "question_id": q.id,
                "topic": q.topic,
                "chosen_stance": c_stance,
                "rejected_stance": r_stance,
                "chosen_style": c_style,
                "rejected_style": r_style,
                "kind": kind,
            }
        )
    rng.shuffle(pairs)
    return pairs


def value_gap(pairs: list[dict[str, Any]]) -> dict[str, float]:
    """Δ_s = P(chosen = s) − P(rejected = s) over all pairs, from the generator's labels."""
    n = len(pairs)
    chosen = Counter(p["chosen_stance"] for p in pairs)
    rejected = Counter(p["rejected_stance"] for p in pairs)
    return {s: (chosen[s] - rejected[s]) / n for s in STANCES}
