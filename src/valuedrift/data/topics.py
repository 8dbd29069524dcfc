"""The topics of a probe bank, read from the bank's own files (topics are data, not code).

``<bank>/topics.jsonl`` (beside the questions file) lists one topic a line: ``{"slug", "name"}``. The slug
names the topic everywhere (annotation and response-bank files, tables, MLflow metrics); the name is
what the questions file may carry in its ``topic`` field instead (V-PRISM's ``"Discussions on
Abortion"``). A bank without a topics file takes its topics from its questions, the slug made from the
name (lower case, words joined by ``_``).

To bring a bank on other subjects, write its questions, annotations and ``topics.jsonl``; no code
changes (``tests/test_topics_as_data.py`` builds one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.core.io import read_records, require

TOPICS_FILE_NAME = "topics.jsonl"
SLUG = re.compile(r"^[a-z][a-z0-9_]*$")


def slugify(name: str) -> str:
    """``"Gun Control & Safety"`` -> ``"gun_control_safety"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "topic"


@dataclass(frozen=True)
class TopicTable:
    """slug -> name, in file order."""

    names: dict[str, str]
    source: str = ""
    closed: bool = True  # False: topics derived from the questions, a new name adds a topic

    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(self.names)

    def slug(self, value: str, path: str | Path, line: int | None) -> str:
        """The slug of ``value`` (a slug or a name); an unknown topic raises DataError at path:line."""
        if value in self.names:
            return value
        for slug, name in self.names.items():
            if name == value:
                return slug
        if not self.closed:
            slug = slugify(value)
            self.names[slug] = value
            return slug
        raise DataError(path, line, f"unknown topic {value!r}; the topics of {self.source} are {', '.join(self.names)}")

    def check_file_stem(self, path: Path, what: str) -> None:
        """``<slug>.jsonl`` files (annotations, response bank) must be named after a topic of the bank."""
        if self.closed and path.stem not in self.names:
            raise DataError(path, None, f"{what} file must be named after a topic slug ({', '.join(self.names)})")


def _parse_topic(obj: dict[str, Any], path: Path, line: int) -> dict[str, str]:
    slug = require(obj, "slug", str, path, line)
    if not SLUG.match(slug):
        raise DataError(path, line, f"field 'slug' must be lower-case letters, digits and _, got {slug!r}")
    return {"slug": slug, "name": require(obj, "name", str, path, line)}


def load_topics(path: str | Path) -> TopicTable:
    """Read a ``topics.jsonl`` file; slugs and names must be unique."""
    rows = read_records(path, _parse_topic, key="slug")
    names: dict[str, str] = {}
    for r in rows:
        if r["name"] in names.values():
            raise DataError(path, None, f"topic name {r['name']!r} is listed twice")
        names[r["slug"]] = r["name"]
    return TopicTable(names, str(path))


def topics_for(bank_dir: str | Path) -> TopicTable:
    """The topics of the bank in ``bank_dir`` (its ``topics.jsonl``), or an open table that takes them
    from the questions when the bank has no topics file."""
    path = Path(bank_dir) / TOPICS_FILE_NAME
    return load_topics(path) if path.exists() else TopicTable({}, str(bank_dir), closed=False)


def known_topics(bank_dir: str | Path) -> tuple[str, ...] | None:
    """The slugs of the bank's topics file, or None when it has none (nothing to check names against)."""
    path = Path(bank_dir) / TOPICS_FILE_NAME
    return load_topics(path).slugs if path.exists() else None
