"""Checks across data files, reported with file:line (each file's own schema is checked by its reader).

Response bank (``response_bank/<slug>.jsonl``): every row answers a V-PRISM question that

- exists (its ``id`` is a question id),
- belongs to the file's topic (the row sits in the slot of its question's topic),
- is in the dev split (test-split questions must never reach training data),

and (id, stance, style) is unique within the bank.
"""

from __future__ import annotations

from pathlib import Path

from valuedrift.core.errors import DataError
from valuedrift.core.io import iter_jsonl, require
from valuedrift.data.bank import BANK_DIR
from valuedrift.data.schemas import Probe


def check_bank_questions(data_dir: str | Path, questions: list[Probe]) -> None:
    """Raise DataError (file:line) for the first bank row that breaks a rule in the module docstring."""
    by_id = {q.id: q for q in questions}
    seen: dict[tuple[int, str, str], str] = {}
    for f in sorted((Path(data_dir) / BANK_DIR).glob("*.jsonl")):
        for line, obj in iter_jsonl(f):
            qid = require(obj, "id", int, f, line)
            q = by_id.get(qid)
            if q is None:
                raise DataError(f, line, f"id {qid} is not a V-PRISM question")
            if q.topic != f.stem:
                raise DataError(f, line, f"id {qid} is a {q.topic!r} question, not {f.stem!r}: move the row to {q.topic}.jsonl")
            if q.split != "dev":
                raise DataError(f, line, f"id {qid} is a {q.split}-split question; the bank holds dev-split answers only")
            key = (qid, str(obj.get("stance")), str(obj.get("style")))
            if key in seen:
                raise DataError(f, line, f"duplicate answer for id {qid}, {key[1]}, {key[2]} (first at {seen[key]})")
            seen[key] = f"{f}:{line}"
