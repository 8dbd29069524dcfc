"""Authored source texts: the stance response bank and the general-instruction rows.

- ``response_bank/<slug>.jsonl``: ``{"id", "stance", "style", "text"}`` — answers to dev-split V-PRISM
  questions, each stance in each style (see data/AUTHORING.md).
- ``sft/general_instructions.jsonl``: ``{"id", "instruction", "response"}`` — non-value-laden rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.core.io import read_records, require
from valuedrift.core.vocab import STANCES, STYLES
from valuedrift.data.topics import topics_for

BANK_DIR = Path("response_bank")
TOPICS_DIR = Path("v_prism")  # the probe bank whose topics the response bank answers
GENERAL_FILE = Path("sft") / "general_instructions.jsonl"


@dataclass(frozen=True)
class BankAnswer:
    id: int
    stance: str
    style: str
    text: str


def _parse_answer(obj: dict[str, Any], path: Path, line: int) -> BankAnswer:
    stance = require(obj, "stance", str, path, line)
    if stance not in STANCES:
        raise DataError(path, line, f"field 'stance' must be one of {', '.join(STANCES)}, got {stance!r}")
    style = require(obj, "style", str, path, line)
    if style not in STYLES:
        raise DataError(path, line, f"field 'style' must be one of {', '.join(STYLES)}, got {style!r}")
    return BankAnswer(require(obj, "id", int, path, line), stance, style, require(obj, "text", str, path, line))


class ResponseBank:
    """Answers indexed by (question id, stance) -> {style: text}."""

    def __init__(self, answers: list[BankAnswer]):
        self.index: dict[tuple[int, str], dict[str, str]] = defaultdict(dict)
        for a in answers:
            self.index[(a.id, a.stance)][a.style] = a.text

    def question_ids(self) -> list[int]:
        """Questions that have every stance in at least one style."""
        ids = {qid for qid, _ in self.index}
        return sorted(q for q in ids if all((q, s) in self.index for s in STANCES))

    def get(self, qid: int, stance: str, style: str) -> str:
        styles = self.index[(qid, stance)]
        return styles[style] if style in styles else next(iter(styles.values()))

    def styles(self, qid: int, stance: str) -> list[str]:
        return sorted(self.index[(qid, stance)])


def load_bank(data_dir: str | Path = "data") -> ResponseBank:
    """Read every response-bank file; (id, stance, style) must be unique across the bank."""
    directory = Path(data_dir) / BANK_DIR
    answers: list[BankAnswer] = []
    seen: dict[tuple[int, str, str], str] = {}
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise DataError(directory, None, "no response-bank files (*.jsonl)")
    topics = topics_for(Path(data_dir) / TOPICS_DIR)
    for f in files:
        topics.check_file_stem(f, "response-bank")
        for obj in read_records(f, _parse_answer):
            key = (obj.id, obj.stance, obj.style)
            if key in seen:
                raise DataError(f, None, f"duplicate answer for id {obj.id}, {obj.stance}, {obj.style} (also in {seen[key]})")
            seen[key] = str(f)
            answers.append(obj)
    return ResponseBank(answers)


def _parse_general(obj: dict[str, Any], path: Path, line: int) -> dict[str, str]:
    return {
        "id": require(obj, "id", str, path, line),
        "instruction": require(obj, "instruction", str, path, line),
        "response": require(obj, "response", str, path, line),
    }


def load_general(data_dir: str | Path = "data") -> list[dict[str, str]]:
    return read_records(Path(data_dir) / GENERAL_FILE, _parse_general, key="id")
