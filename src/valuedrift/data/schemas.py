"""Record schemas of the project's data files, and a JSON-Lines reader that reports file:line.

Every reader here validates each record as it goes; a bad record raises :class:`DataError` with the
file, the 1-based line and the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STANCES: tuple[str, ...] = ("support", "neutral", "oppose")
STYLES: tuple[str, ...] = ("brief", "reasoned", "conversational")

# slug -> V-PRISM topic name (the paper's 11 categories)
TOPICS: dict[str, str] = {
    "abortion": "Discussions on Abortion",
    "climate": "Climate Change Opinions",
    "elections": "Election and Political Discussions",
    "economy": "Economic and Social Policy",
    "work": "Work and Attitudes",
    "religion": "Religion and Spirituality Beliefs",
    "family": "Family and Relationship Values",
    "death_penalty": "Ethics of Death and Penalty",
    "immigration": "Immigration Policies",
    "race": "Race and Racism",
    "gender": "Gender and LGBTQ+ Identity",
}
TOPIC_SLUGS: tuple[str, ...] = tuple(TOPICS)
SLUG_OF_TOPIC: dict[str, str] = {v: k for k, v in TOPICS.items()}


class DataError(ValueError):
    """A malformed data record: names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Probe:
    """One value-laden question with its likelihood-route annotation.

    ``statements`` maps each stance to the assistant answer a_s(p) that takes that stance.
    """

    id: int
    topic: str  # slug
    question: str
    split: str
    proposition: str | None = None
    statements: dict[str, str] | None = None

    @property
    def annotated(self) -> bool:
        return self.statements is not None


def require(record: dict[str, Any], name: str, kind: type | tuple[type, ...], path: Path, line: int) -> Any:
    """Return ``record[name]`` or raise DataError naming the field."""
    if name not in record:
        raise DataError(path, line, f"missing field {name!r}")
    value = record[name]
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(path, line, f"field {name!r} must be {want}, got {type(value).__name__} {value!r}")
    if isinstance(value, str) and not value.strip():
        raise DataError(path, line, f"field {name!r} must not be empty")
    return value


def _decoded_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file; a line that is not UTF-8 raises DataError naming it."""
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, i, f"not valid UTF-8 text ({e.reason} at byte {e.start} of the line)") from e


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; bad JSON raises DataError with file:line."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    n = 0
    for i, raw in enumerate(_decoded_lines(path), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, i, f"invalid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(obj, dict):
            raise DataError(path, i, f"expected a JSON object, got {type(obj).__name__}")
        n += 1
        yield i, obj
    if n == 0:
        raise DataError(path, None, "file is empty")


def read_records(path: str | Path, parse: Callable[[dict[str, Any], Path, int], Any], key: str | None = None) -> list[Any]:
    """Parse every line of a JSONL file with ``parse``; if ``key`` is given, ids must be unique."""
    path = Path(path)
    out, seen = [], {}
    for line, obj in iter_jsonl(path):
        rec = parse(obj, path, line)
        if key is not None:
            k = getattr(rec, key) if not isinstance(rec, dict) else rec[key]
            if k in seen:
                raise DataError(path, line, f"duplicate {key} {k!r} (first on line {seen[k]})")
            seen[k] = line
        out.append(rec)
    return out


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    tmp.replace(path)
