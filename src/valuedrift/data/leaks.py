"""Guard: no test-split (held-out) question may reach training data.

Authored rows carry the question they answer, so an exact match of the prompt against the test-split
questions is a complete check (:func:`assert_no_leaks`). Rows read from a real dataset carry no topic or
question id: :func:`drop_test_overlap` compares the text of every user turn, normalised (lower case,
punctuation and repeated white space removed), with the test-split questions, drops the rows that ask one
and says how many. That catches copies, not paraphrases, and it is said in a warning each time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from valuedrift.data.schemas import Probe

log = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[\W_]+")


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


def normalise(text: str) -> str:
    """Lower case, every run of non-word characters one space."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def asks_held_out(row: dict[str, Any], held: set[str]) -> bool:
    """Whether any user turn of the row's conversational ``prompt`` is (normalised) a held-out question."""
    return any(m["role"] == "user" and normalise(m["content"]) in held for m in row["prompt"])


def drop_test_overlap(rows: list[dict[str, Any]], questions: list[Probe], what: str) -> tuple[list[dict[str, Any]], int]:
    """``rows`` without those asking a test-split question (text overlap, module docstring), and how many
    were dropped. Logs a warning that rows from a dataset are checked by text only."""
    held = {normalise(t) for t in held_out_texts(questions)}
    kept = [r for r in rows if not asks_held_out(r, held)]
    dropped = len(rows) - len(kept)
    log.warning(
        "%s: rows from a dataset carry no topic labels, so they are checked against the %d held-out test "
        "questions by prompt text only (copies, not paraphrases); %d row(s) asking one were dropped",
        what, len(held), dropped,
    )
    return kept, dropped
