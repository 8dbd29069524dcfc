"""The probe bank: V-PRISM questions joined with their likelihood-route annotations.

Files (under the data directory, versioned by ``data.dvc``):

- ``v_prism/topics.jsonl``: ``{"slug", "name"}`` — the bank's topics (:mod:`valuedrift.data.topics`);
- ``v_prism/v_prism.jsonl``: ``{"id", "topic", "question", "split"}`` — the paper's 550 questions
  (``topic`` a slug or a name of topics.jsonl);
  the original layout ``{"dev": [{"id", "input", "topic"}], "test": [...]}`` (a ``.json`` file) is read too.
- ``v_prism/annotations/<topic slug>.jsonl``: ``{"id", "proposition", "support", "neutral", "oppose"}``.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.core.io import read_records, require
from valuedrift.core.vocab import STANCES
from valuedrift.data.schemas import Probe
from valuedrift.data.topics import TopicTable, topics_for

QUESTIONS_FILE = Path("v_prism") / "v_prism.jsonl"
ANNOTATIONS_DIR = Path("v_prism") / "annotations"


def _question_parser(topics: TopicTable) -> Any:
    def parse(obj: dict[str, Any], path: Path, line: int) -> Probe:
        split = require(obj, "split", str, path, line)
        if split not in ("dev", "test"):
            raise DataError(path, line, f"field 'split' must be dev or test, got {split!r}")
        return Probe(
            id=require(obj, "id", int, path, line),
            topic=topics.slug(require(obj, "topic", str, path, line), path, line),
            question=require(obj, "question", str, path, line),
            split=split,
        )

    return parse


def load_questions(path: str | Path, topics: TopicTable | None = None) -> list[Probe]:
    """Read V-PRISM questions from our JSONL layout or the original ``{"dev": [...], "test": [...]}`` JSON.

    ``topics``: the bank's topic table (default: the ``topics.jsonl`` beside the file, if any)."""
    path = Path(path)
    topics = topics if topics is not None else topics_for(path.parent)
    if path.suffix == ".json":
        return _load_original_layout(path, topics)
    return read_records(path, _question_parser(topics), key="id")


def _load_original_layout(path: Path, topics: TopicTable) -> list[Probe]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg}") from e
    if not isinstance(data, dict) or not {"dev", "test"} & set(data):
        raise DataError(path, None, "expected an object with 'dev' and/or 'test' lists")
    probes, seen = [], set()
    for split in ("dev", "test"):
        for i, obj in enumerate(data.get(split, [])):
            where = f"{split}[{i}]"
            if not isinstance(obj, dict):
                raise DataError(path, None, f"{where}: expected an object")
            for f, kind in (("id", int), ("input", str), ("topic", str)):
                if not isinstance(obj.get(f), kind):
                    raise DataError(path, None, f"{where}: field {f!r} missing or not {kind.__name__}")
            if obj["id"] in seen:
                raise DataError(path, None, f"{where}: duplicate id {obj['id']}")
            seen.add(obj["id"])
            probes.append(Probe(obj["id"], topics.slug(obj["topic"], path, None), obj["input"], split))
    return probes


def _parse_annotation(obj: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    rec = {"id": require(obj, "id", int, path, line), "proposition": require(obj, "proposition", str, path, line)}
    for s in STANCES:
        rec[s] = require(obj, s, str, path, line)
    if len({rec[s].strip().lower() for s in STANCES}) < len(STANCES):
        raise DataError(path, line, "the support/neutral/oppose statements must differ")
    extra = set(obj) - {"id", "proposition", *STANCES}
    if extra:
        raise DataError(path, line, f"unknown field(s) {sorted(extra)}; a statement belongs in one of {STANCES}")
    return rec


def load_annotations(directory: str | Path, topics: TopicTable) -> dict[int, tuple[Path, int, dict[str, Any]]]:
    """Read every ``<slug>.jsonl`` annotation file; returns id -> (file, record)."""
    directory = Path(directory)
    out: dict[int, tuple[Path, int, dict[str, Any]]] = {}
    files = sorted(directory.glob("*.jsonl"))
    for f in files:
        topics.check_file_stem(f, "annotation")
        for rec in read_records(f, _parse_annotation, key="id"):
            if rec["id"] in out:
                raise DataError(f, None, f"id {rec['id']} is annotated twice (also in {out[rec['id']][0]})")
            out[rec["id"]] = (f, rec)
    return out  # type: ignore[return-value]


def load_probe_bank(data_dir: str | Path = "data", annotated_only: bool = True) -> list[Probe]:
    """V-PRISM questions joined with their annotations, ordered by id.

    An annotation whose id is not a question, or whose file is not the question's topic, is an error.
    """
    data_dir = Path(data_dir)
    topics = topics_for((data_dir / QUESTIONS_FILE).parent)
    questions = {p.id: p for p in load_questions(data_dir / QUESTIONS_FILE, topics)}
    annotations = load_annotations(data_dir / ANNOTATIONS_DIR, topics)
    probes = []
    for pid, (f, _rec) in annotations.items():
        q = questions.get(pid)
        if q is None:
            raise DataError(f, None, f"id {pid} is not a V-PRISM question")
        if q.topic != f.stem:
            raise DataError(f, None, f"id {pid} belongs to topic {q.topic!r}, not {f.stem!r}")
    for pid in sorted(questions):
        q = questions[pid]
        if pid in annotations:
            rec = annotations[pid][1]
            probes.append(Probe(q.id, q.topic, q.question, q.split, rec["proposition"], {s: rec[s] for s in STANCES}))
        elif not annotated_only:
            probes.append(q)
    if not probes:
        raise DataError(data_dir / ANNOTATIONS_DIR, None, "no annotated probes found")
    return probes


def select_probes(probes: list[Probe], per_topic: int, splits: list[str], seed: int) -> list[Probe]:
    """A seeded, stable subset: ``per_topic`` probes from each (split, topic); ``per_topic <= 0`` keeps all.

    The same seed always gives the same probes, so every checkpoint of a run is scored on the same set.
    Subsets are nested: each (split, topic) is shuffled once by the seed and the first ``per_topic`` are
    kept, so the trace set (``eval.trace_probes_per_topic``) lies inside the phase set of the same seed and
    a phase evaluation can stand in for an evaluation of the phase set alone.
    """
    groups: dict[tuple[str, str], list[Probe]] = defaultdict(list)
    for p in probes:
        if p.split in splits:
            groups[(p.split, p.topic)].append(p)
    chosen: list[Probe] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p.id)
        if 0 < per_topic < len(members):
            random.Random(f"{seed}:{key}").shuffle(members)
            members = sorted(members[:per_topic], key=lambda p: p.id)
        chosen.extend(members)
    return chosen
