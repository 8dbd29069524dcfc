"""Synthetic preference sets with a controlled value gap.

Given a target stance t, a gap g ∈ [0, 1] and n pairs:

- gap pairs (exactly round(g·n)): chosen takes t, rejected takes the opposite stance ō(t)
  (ō(support) = oppose, ō(oppose) = support, ō(neutral) alternates support/oppose); both in the same
  style, so the pair differs in stance only;
- style pairs (the rest): chosen and rejected share a stance (cycled over all three) and differ in
  style only (chosen in ``chosen_styles``, rejected in ``rejected_styles``).

The value gap on stance s is P(chosen = s) − P(rejected = s); on the target it equals g exactly when
the style pairs' shared stances are balanced, and up to ±1/n otherwise. g = 0 gives a style-only set,
the role UltraFeedback / HH-RLHF play in the paper. Questions come from the dev split only.
"""

from __future__ import annotations

import random
from typing import Any

from valuedrift.config import STANCES, PreferenceSetConfig
from valuedrift.data.bank import ResponseBank
from valuedrift.data.corpora import dev_questions
from valuedrift.data.schemas import STYLES, Probe

OPPOSITE = {"support": "oppose", "oppose": "support"}


def resolve_target(target: str, sft_profile: dict[str, float] | None) -> str:
    """``reinforce`` = the stance the SFT checkpoint favours most (its argmax over "all"); ``reverse`` =
    the opposite of that (for a neutral-favouring model: the less likely of support / oppose)."""
    if target in STANCES:
        return target
    if sft_profile is None:
        raise ValueError(f"target {target!r} needs the SFT checkpoint's measured stance profile")
    favoured = max(STANCES, key=lambda s: sft_profile[s])
    if target == "reinforce":
        return favoured
    if favoured == "neutral":
        return min(("support", "oppose"), key=lambda s: sft_profile[s])
    return OPPOSITE[favoured]


def generate_pairs(
    cfg: PreferenceSetConfig, questions: list[Probe], bank: ResponseBank, seed: int, target: str
) -> list[dict[str, Any]]:
    """Deterministic for (cfg, seed, bank): the same inputs give the same pairs in the same order."""
    if target not in STANCES:
        raise ValueError(f"target must be a stance, got {target!r}")
    pool = dev_questions(questions, bank, cfg.topics or None)
    if not pool:
        raise ValueError(f"no dev-split question with bank answers in topics {cfg.topics or 'all'}")
    rng = random.Random(seed)
    n_gap = round(cfg.gap * cfg.pairs)
    pairs = []
    for i in range(cfg.pairs):
        q = pool[rng.randrange(len(pool))]
        if i < n_gap:
            other = OPPOSITE.get(target) or ("support", "oppose")[i % 2]
            style = rng.choice(STYLES)
            c_stance, r_stance, c_style, r_style = target, other, style, style
        else:
            shared = STANCES[(i - n_gap) % len(STANCES)]
            c_stance = r_stance = shared
            c_style, r_style = rng.choice(cfg.chosen_styles), rng.choice(cfg.rejected_styles)
        pairs.append(
            {
                "prompt": [{"role": "user", "content": q.question}],
                "chosen": [{"role": "assistant", "content": bank.get(q.id, c_stance, c_style)}],
                "rejected": [{"role": "assistant", "content": bank.get(q.id, r_stance, r_style)}],
                "question_id": q.id,
                "topic": q.topic,
                "chosen_stance": c_stance,
                "rejected_stance": r_stance,
                "chosen_style": c_style,
                "rejected_style": r_style,
                "kind": "gap" if i < n_gap else "style",
            }
        )
    rng.shuffle(pairs)
    return pairs


def value_gap(pairs: list[dict[str, Any]]) -> dict[str, float]:
    """Value gap per stance: share of chosen with stance s minus share of rejected with stance s."""
    n = len(pairs)
    return {
        s: sum(p["chosen_stance"] == s for p in pairs) / n - sum(p["rejected_stance"] == s for p in pairs) / n
        for s in STANCES
    }
