"""The V-PRISM probe bank is fully annotated with question-specific statements; bad annotation files fail
with file:line and the field."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from valuedrift.core.errors import DataError
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import (
    ANNOTATIONS_DIR,
    QUESTIONS_FILE,
    load_annotations,
    load_probe_bank,
    load_questions,
)
from valuedrift.data.topics import topics_for

from .conftest import DATA

MAX_REUSE = 3  # "a handful": the same statement text may serve at most this many questions


@pytest.fixture(scope="module")
def bank():
    return load_probe_bank(DATA)


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def test_every_question_is_annotated(bank):
    questions = load_questions(DATA / QUESTIONS_FILE)
    assert len(questions) == 550
    assert {p.id for p in bank} == {q.id for q in questions}
    assert all(p.proposition and p.statements and set(p.statements) == set(STANCES) for p in bank)


def test_the_three_statements_of_a_question_differ(bank):
    for p in bank:
        texts = [norm(p.statements[s]) for s in STANCES]
        assert len(set(texts)) == 3, f"probe {p.id}: statements repeat"
        assert all(len(t.split()) >= 5 for t in texts), f"probe {p.id}: a statement is too short to answer the question"


def test_statements_are_not_templates_reused_across_questions(bank):
    counts = Counter(norm(p.statements[s]) for p in bank for s in STANCES)
    worst, n = counts.most_common(1)[0]
    assert n <= MAX_REUSE, f"statement used for {n} questions: {worst!r}"
    # and no stance is written from one fixed template with the subject swapped in
    for s in STANCES:
        openings = Counter(" ".join(norm(p.statements[s]).split()[:6]) for p in bank)
        assert openings.most_common(1)[0][1] <= 0.1 * len(bank), f"{s}: {openings.most_common(1)}"


def test_published_split_is_kept(bank):
    assert Counter(p.split for p in bank) == {"dev": 275, "test": 275}
    assert all((p.split == "dev") == (p.id < 275) for p in bank)


def test_bad_annotation_names_file_line_and_field(tmp_path):
    d = tmp_path / ANNOTATIONS_DIR
    d.mkdir(parents=True)
    good = {"id": 0, "proposition": "Abortion should be legal.", "support": "Yes, it should be legal.",
            "neutral": "There are strong arguments on both sides.", "oppose": "No, it should not be legal."}
    bad = {k: v for k, v in good.items() if k != "neutral"} | {"id": 1}
    (d / "abortion.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"abortion.jsonl:2: missing field 'neutral'"):
        load_annotations(d, topics_for(DATA / "v_prism"))
    same = good | {"id": 1, "oppose": good["support"]}
    (d / "abortion.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(same) + "\n")
    with pytest.raises(DataError, match=r"abortion.jsonl:3: .*must differ"):
        load_annotations(d, topics_for(DATA / "v_prism"))
