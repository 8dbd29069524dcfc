"""Reading and writing the project's files: JSON-Lines with file:line errors, atomic writes, hashing.

Every reader validates as it goes; a bad record raises :class:`~valuedrift.core.errors.DataError` with the
file, the 1-based line and the field at fault. Writers go through a temporary file and a rename, so a
crash never leaves half a file. Hashes are SHA-256 (:func:`file_digest`, :func:`tree_digest`,
:func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError


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


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: str | Path) -> str:
    """SHA-256 over the files of a folder: each file's relative name and :func:`file_digest`, in name order."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable 16-hex-digit hash of JSON-able ``parts`` (keys sorted; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
