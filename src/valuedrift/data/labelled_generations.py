"""The labelled real generations (``data/labelled_generations/``, protocol in data/AUTHORING.md).

Files of the folder, joined on the opaque answer id ``aid``:

- ``answers.jsonl`` — what the labeller read: ``{"aid", "id", "question", "proposition", "answer"}``;
- ``key.jsonl`` — the checkpoint mapping, kept apart: ``{"aid", "checkpoint", "probe_id", "topic", "split",
  "sample", "new_tokens", "finished"}``;
- ``labels.jsonl`` — first labelling pass, every answer: ``{"aid", "stance", "flag"}``, ``stance`` one of
  support / neutral / oppose relative to the question's proposition, ``flag`` null, ``off_topic`` or
  ``incoherent``;
- ``labels_pass2.jsonl`` — the second, separate pass over a random 100 (same fields).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.core.io import read_records, require
from valuedrift.core.vocab import SPLITS, STANCES

FLAGS: tuple[str, ...] = ("off_topic", "incoherent")
ANSWERS, KEY, LABELS, LABELS_PASS2 = "answers.jsonl", "key.jsonl", "labels.jsonl", "labels_pass2.jsonl"


@dataclass(frozen=True)
class LabelledGeneration:
    """One sampled answer with its label(s) and (unblinded) origin."""

    aid: str
    id: int  # V-PRISM question id
    question: str
    answer: str
    gold: str  # first-pass stance
    flag: str | None
    checkpoint: str
    topic: str
    split: str
    sample: int

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _parse_answer(obj: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    return {"aid": require(obj, "aid", str, path, line), "id": require(obj, "id", int, path, line),
            "question": require(obj, "question", str, path, line), "answer": require(obj, "answer", str, path, line)}


def _parse_key(obj: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    split = require(obj, "split", str, path, line)
    if split not in SPLITS:
        raise DataError(path, line, f"field 'split' must be one of {', '.join(SPLITS)}, got {split!r}")
    return {"aid": require(obj, "aid", str, path, line), "checkpoint": require(obj, "checkpoint", str, path, line),
            "topic": require(obj, "topic", str, path, line), "split": split, "sample": require(obj, "sample", int, path, line)}


def parse_label(obj: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    stance = require(obj, "stance", str, path, line)
    if stance not in STANCES:
        raise DataError(path, line, f"field 'stance' must be one of {', '.join(STANCES)}, got {stance!r}")
    flag = obj.get("flag")
    if flag is not None and flag not in FLAGS:
        raise DataError(path, line, f"field 'flag' must be null or one of {', '.join(FLAGS)}, got {flag!r}")
    extra = set(obj) - {"aid", "stance", "flag"}
    if extra:
        raise DataError(path, line, f"unknown field(s) {sorted(extra)}")
    return {"aid": require(obj, "aid", str, path, line), "stance": stance, "flag": flag}


def read_labels(path: str | Path) -> dict[str, dict[str, Any]]:
    """aid -> {stance, flag} of one labelling pass (file:line on a bad record or a repeated aid)."""
    return {r["aid"]: r for r in read_records(path, parse_label, key="aid")}


def load_labelled_generations(folder: str | Path) -> list[LabelledGeneration]:
    """Every labelled answer of ``folder`` (first pass), in answers.jsonl order.

    An answer without a key row or a label, or a label or key row for an unknown aid, is a DataError naming
    the file."""
    folder = Path(folder)
    for name in (ANSWERS, KEY, LABELS):
        if not (folder / name).is_file():
            raise DataError(folder / name, None, "missing (labelled generations need answers, key and labels files)")
    answers = read_records(folder / ANSWERS, _parse_answer, key="aid")
    keys = {r["aid"]: r for r in read_records(folder / KEY, _parse_key, key="aid")}
    labels = read_labels(folder / LABELS)
    aids = {a["aid"] for a in answers}
    for name, table in ((KEY, keys), (LABELS, labels)):
        missing, unknown = aids - set(table), set(table) - aids
        if missing or unknown:
            what = f"no row for {len(missing)} answer(s), e.g. {sorted(missing)[0]}" if missing else f"{len(unknown)} unknown aid(s), e.g. {sorted(unknown)[0]}"
            raise DataError(folder / name, None, what)
    out = []
    for a in answers:
        k, lab = keys[a["aid"]], labels[a["aid"]]
        out.append(LabelledGeneration(a["aid"], a["id"], a["question"], a["answer"], lab["stance"], lab["flag"],
                                      k["checkpoint"], k["topic"], k["split"], k["sample"]))
    return out
