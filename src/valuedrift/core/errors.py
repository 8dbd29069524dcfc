"""The two kinds of bad input, and the checks that raise them.

- :class:`ConfigError`: a bad value in ``params.yaml`` (or a CLI flag); ``key`` is the dotted path.
- :class:`DataError`: a malformed data record; names the file, the 1-based line and the field.

The CLI turns both into a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path


class ConfigError(ValueError):
    """An invalid parameter. ``key`` is the dotted path in params.yaml (or ``--flag`` for a CLI flag)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key.startswith("--") else f"params: {key}: {message}")


class DataError(ValueError):
    """A malformed data record: names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


def check(cond: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` at ``key`` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(key, message)


def check_defined(name: str, defined: Collection[str], key: str, where: str) -> None:
    """``name`` (the value at ``key``) must be one of ``defined`` (a list or the keys of a mapping)."""
    check(name in defined, key, f"{name!r} is not defined in {where} ({', '.join(defined) or 'none'})")
