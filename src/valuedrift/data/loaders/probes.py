"""Probe loaders: V-PRISM / PRISM, OpinionQA and GlobalOpinionQA → :class:`~valuedrift.data.schemas.Probe`.

Each loader takes a hub id or a local path in the dataset's own format and reads it with
``datasets.load_dataset``; a record that does not fit raises DataError naming ``file:line`` (hub:
``<id>[<split>] row <i>``) and the field. ``load_probes("<kind>:<source>")`` dispatches on the kind.

Formats (what the loaders read):

- ``v_prism``: our ``v_prism.jsonl`` (id, topic, question, split) or the original ``value_drifts.json``
  (``{"dev": [{"id", "input", "topic"}], "test": [...]}``); a hub id with ``dev``/``test`` splits and
  those fields. Keeps the published split.
- ``prism``: PRISM (``HannahRoseKirk/prism-alignment``, config ``conversations``;
  locally ``conversations.jsonl`` or its folder). A probe is the ``opening_prompt`` of a conversation whose
  ``conversation_type`` is in ``types`` (default: controversy guided, values guided); topic = that type.
- ``opinionqa``: OpinionQA (Santurkar et al. 2023) ``human_resp/<survey>/info.csv`` files (columns
  ``key``, ``question``, ``references`` = a Python list literal of answer options); a folder (searched
  recursively), one ``info.csv``, or a hub repo holding that layout. Topic = the survey folder name.
- ``global_opinionqa``: GlobalOpinionQA (``Anthropic/llm_global_opinions``, ``data/global_opinions.csv``;
  columns ``question``, ``selections`` = ``defaultdict(<class 'list'>, {country: [share per option]})``,
  ``options`` = a Python list literal, ``source``). Topic = the source survey (gas, wvs).

Probes from PRISM, OpinionQA and GlobalOpinionQA carry no stance statements, so only the paper route can
score them; they get split ``test`` (never training data). Python-literal fields are parsed with
``ast.literal_eval`` (literals only, no code runs).
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.core.io import iter_jsonl
from valuedrift.data.probes import load_questions
from valuedrift.data.schemas import Probe
from valuedrift.data.topics import topics_for

PRISM_TYPES: tuple[str, ...] = ("controversy guided", "values guided")
Where = tuple[str, int | None]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


# --------------------------------------------------------------------------------------------------
# Rows with their location, through datasets.load_dataset
# --------------------------------------------------------------------------------------------------


def _line_numbers(path: Path, builder: str) -> list[int]:
    """1-based first line of each record: non-blank lines for JSON Lines, csv record starts after the header."""
    if builder == "json":
        with path.open(encoding="utf-8") as fh:
            return [i for i, raw in enumerate(fh, start=1) if raw.strip()]
    starts = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        prev = reader.line_num
        for _ in reader:
            starts.append(prev + 1)
            prev = reader.line_num
    return starts


def _load_local(path: Path, builder: str) -> Iterator[tuple[Where, dict[str, Any]]]:
    from datasets import load_dataset

    try:
        ds = load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - locate the bad record ourselves, then report it with file:line
        if builder == "json":

            for _ in iter_jsonl(path):  # raises DataError(file:line) on the first bad line
                pass
        raise DataError(path, None, f"cannot be read as {builder}: {e}") from e
    lines = _line_numbers(path, builder)
    for i, row in enumerate(ds):
        yield (str(path), lines[i] if i < len(lines) else None), row


def rows(source: str, builder: str, local_name: str, hub_config: str | None = None, hub_split: str = "train",
         hub_data_files: str | None = None) -> Iterator[tuple[Where, dict[str, Any]]]:
    """Records of a local file / folder (every ``local_name`` under it) or a hub dataset, with their location."""
    path = Path(source).expanduser()
    if path.exists():
        files = [path] if path.is_file() else sorted(path.rglob(local_name))
        if not files:
            raise DataError(path, None, f"no {local_name} file found under this folder")
        for f in files:
            yield from _load_local(f, builder)
        return
    if not re.match(r"^[\w.\-]+/[\w.\-]+$", source):
        raise DataError(source, None, "neither an existing local path nor a hub id (org/name)")
    from datasets import load_dataset

    ds = load_dataset(source, name=hub_config, split=hub_split, data_files=hub_data_files)
    for i, row in enumerate(ds):
        yield (f"{source}[{hub_split}] row {i}", None), row


def field(row: dict[str, Any], name: str, where: Where, kind: type = str) -> Any:
    """``row[name]`` checked for presence, type and non-emptiness; else DataError at ``where``."""
    value = row.get(name)
    if value is None:
        raise DataError(where[0], where[1], f"missing field {name!r}")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(where[0], where[1], f"field {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, str) and not value.strip():
        raise DataError(where[0], where[1], f"field {name!r} must not be empty")
    return value


def literal(row: dict[str, Any], name: str, where: Where, kind: type) -> Any:
    """Parse a Python-literal string field (lists, dicts) with ast.literal_eval."""
    text = field(row, name, where)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise DataError(where[0], where[1], f"field {name!r} is not a Python {kind.__name__} literal: {text[:80]!r}") from e
    if not isinstance(value, kind) or not value:
        raise DataError(where[0], where[1], f"field {name!r} must be a non-empty {kind.__name__}, got {text[:80]!r}")
    return value


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def load_vprism(source: str) -> list[Probe]:
    """V-PRISM from our JSONL, the original JSON layout, or a hub id with dev/test splits."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "v_prism.jsonl"
    if path.exists():
        return load_questions(path)

    probes, seen = [], set()
    topics = topics_for(path.parent)  # no local topics file: topics from the rows' names
    for split in ("dev", "test"):
        for (where, line), row in rows(source, "json", "", hub_split=split):
            loc = (where, line)
            pid = field(row, "id", loc, int)
            text = row.get("question") if row.get("question") is not None else row.get("input")
            if not isinstance(text, str) or not text.strip():
                raise DataError(where, line, "missing field 'input' (or 'question')")
            if pid in seen:
                raise DataError(where, line, f"duplicate id {pid}")
            seen.add(pid)
            probes.append(Probe(pid, topics.slug(field(row, "topic", loc), where, line), text, split))
    return probes


def load_prism(source: str, types: tuple[str, ...] = PRISM_TYPES) -> list[Probe]:
    """PRISM opening prompts of the conversations whose ``conversation_type`` is in ``types``."""
    probes = []
    for where, row in rows(source, "json", "conversations.jsonl", hub_config="conversations"):
        field(row, "conversation_id", where)
        ctype = field(row, "conversation_type", where)
        prompt = field(row, "opening_prompt", where)
        if ctype in types:
            probes.append(Probe(len(probes), slug(ctype), prompt.strip(), "test"))
    return probes


def load_opinionqa(source: str) -> list[Probe]:
    """OpinionQA survey questions from ``info.csv`` files; topic = survey folder (e.g. american_trends_panel_w26)."""
    probes = []
    for where, row in rows(source, "csv", "info.csv", hub_data_files="**/info.csv"):
        field(row, "key", where)
        question = field(row, "question", where)
        options = literal(row, "references", where, list)
        if not all(isinstance(o, str) for o in options):
            raise DataError(where[0], where[1], "field 'references' must list answer options as strings")
        topic = slug(Path(where[0]).parent.name) if Path(where[0]).exists() else "opinionqa"
        probes.append(Probe(len(probes), topic, question.strip(), "test"))
    return probes


_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class '(?:list)'>\s*,\s*(\{.*\})\s*\)\s*$", re.S)


def parse_selections(text: str, where: Where, n_options: int) -> dict[str, list[float]]:
    """GlobalOpinionQA ``selections``: country -> share of respondents per option (one per option)."""
    m = _DEFAULTDICT.match(text)
    body = m.group(1) if m else text
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError) as e:
        raise DataError(where[0], where[1], f"field 'selections' is not a country -> shares mapping: {text[:80]!r}") from e
    if not isinstance(value, dict) or not value:
        raise DataError(where[0], where[1], "field 'selections' must map countries to option shares")
    for country, shares in value.items():
        if not isinstance(shares, list) or len(shares) != n_options:
            raise DataError(where[0], where[1], f"field 'selections': {country!r} has {len(shares) if isinstance(shares, list) else shares!r} shares for {n_options} options")
    return value


def load_global_opinionqa(source: str) -> list[Probe]:
    """GlobalOpinionQA questions; topic = source survey (gas = Pew Global Attitudes, wvs = World Values Survey)."""
    probes = []
    for where, row in rows(source, "csv", "global_opinions.csv"):
        question = field(row, "question", where)
        options = literal(row, "options", where, list)
        parse_selections(field(row, "selections", where), where, len(options))
        probes.append(Probe(len(probes), slug(field(row, "source", where)), question.strip(), "test"))
    return probes


LOADERS: dict[str, Callable[[str], list[Probe]]] = {
    "v_prism": load_vprism,
    "prism": load_prism,
    "opinionqa": load_opinionqa,
    "global_opinionqa": load_global_opinionqa,
}


def load_probes(spec: str) -> list[Probe]:
    """``<kind>:<hub id or local path>``, kind one of :data:`LOADERS`."""
    kind, sep, source = spec.partition(":")
    if not sep or kind not in LOADERS or not source:
        raise ValueError(f"probe source {spec!r} must be <kind>:<hub id or path> with kind one of {', '.join(LOADERS)}")
    probes = LOADERS[kind](source)
    if not probes:
        raise DataError(source, None, f"no {kind} probes found")
    return probes

