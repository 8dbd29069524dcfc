"""SFT corpora with a controlled stance mix, composed from the authored bank and general instructions.

A corpus with ``rows`` = N, ``value_share`` = v and stance shares m_s has
    n_value = round(v·N) value-laden rows, split over stances by largest remainder of m_s·n_value,
    N − n_value general-instruction rows.
Value-laden rows answer dev-split V-PRISM questions only (the test split never reaches training data).
Rows are conversational prompt/completion records, so SFT trains on the assistant turn only.
"""

from __future__ import annotations

import random
from typing import Any

from valuedrift.config.schema.data import CorpusMix
from valuedrift.core.vocab import STANCES, STYLES
from valuedrift.data.bank import ResponseBank
from valuedrift.data.schemas import Probe


def apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``total`` into integer counts proportional to ``shares`` (largest remainder)."""
    raw = {k: total * w for k, w in shares.items()}
    counts = {k: int(v) for k, v in raw.items()}
    rest = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:rest]:
        counts[k] += 1
    return counts


def dev_questions(questions: list[Probe], bank: ResponseBank, topics: list[str] | None = None) -> list[Probe]:
    """Dev-split questions that have bank answers (optionally restricted to ``topics``)."""
    have = set(bank.question_ids())
    return [q for q in questions if q.split == "dev" and q.id in have and (not topics or q.topic in topics)]


def build_sft_corpus(
    mix: CorpusMix, questions: list[Probe], bank: ResponseBank, general: list[dict[str, str]], seed: int
) -> list[dict[str, Any]]:
    """Compose one corpus; every row carries ``kind`` (value|general), ``stance`` and ``source_id``."""
    rng = random.Random(seed)
    pool = dev_questions(questions, bank)
    if not pool:
        raise ValueError("no dev-split question has response-bank answers")
    n_value = round(mix.value_share * mix.rows)
    n_general = mix.rows - n_value
    if n_general > len(general):
        raise ValueError(f"corpus needs {n_general} general rows but only {len(general)} are authored")
    rows: list[dict[str, Any]] = []
    for stance, n in apportion(n_value, mix.mix).items():
        qs = [pool[i % len(pool)] for i in range(n)] if n > len(pool) else rng.sample(pool, n)
        for q in qs:
            style = rng.choice(bank.styles(q.id, stance))
            rows.append(_row(q.question, bank.get(q.id, stance, style), "value", stance, q.id, q.topic, style))
    for g in rng.sample(general, n_general):
        rows.append(_row(g["instruction"], g["response"], "general", None, g["id"], None, None))
    rng.shuffle(rows)
    return rows


def _row(prompt: str, answer: str, kind: str, stance: str | None, source_id: Any, topic: str | None, style: str | None) -> dict[str, Any]:
    assert style is None or style in STYLES
    assert stance is None or stance in STANCES
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": answer}],
        "kind": kind,
        "stance": stance,
        "topic": topic,
        "style": style,
        "source_id": str(source_id),
    }
