"""Guard: no test-split (held-out) question may reach training data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from valuedrift.data.schemas import Probe


def held_out_texts(questions: Iterable[Probe]) -> set[str]:
    return {q.question.strip() for q in questions if q.split == "test"}


def find_leaks(rows: Iterable[dict[str, Any]], questions: list[Probe]) -> list[str]:
    """Prompts of training rows that are test-split questions (conversational ``prompt`` field)."""
    held = held_out_texts(questions)
    leaks = []
    for r in rows:
        prompt = r["prompt"][0]["content"] if isinstance(r["prompt"], list) else r["prompt"]
        if prompt.strip() in held:
            leaks.append(prompt)
    return leaks


def assert_no_leaks(rows: list[dict[str, Any]], questions: list[Probe], what: str) -> None:
    leaks = find_leaks(rows, questions)
    if leaks:
        raise ValueError(f"{what}: {len(leaks)} test-split question(s) in training data, e.g. {leaks[0]!r}")
