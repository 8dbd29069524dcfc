"""Records of a hub dataset or a local copy of it, read with ``datasets.load_dataset``, with their location.

``source`` is one of

- a hub id (``org/name``): ``load_dataset(id, name=config, data_dir=data_dir, split=split,
  revision=revision)`` (needs a connection or a warm HF cache; ``revision`` pins the dataset's git revision);
- a local folder laid out like the hub repository (``data/train-00000-of-00001.parquet``,
  ``harmless-base/train.jsonl.gz``, …): the same call on the folder, so ``datasets`` infers the splits
  from the file names exactly as it does for the hub;
- a single local file (``.parquet``, ``.jsonl``, ``.json`` — a JSON array too —, ``.csv``, optionally
  ``.gz``): read whole, whatever ``split`` says.

Every record comes with ``where`` for error messages: ``(file, line)`` for a local JSON-Lines file,
``("<source>[<split>] row <i>", None)`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.data.loaders.probes import Where, rows

HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _builder(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    if not suffixes or suffixes[-1] not in BUILDERS:
        raise DataError(path, None, f"unsupported file type; expected one of {', '.join(BUILDERS)} (optionally .gz)")
    return BUILDERS[suffixes[-1]]


def records(
    source: str, split: str = "train", config: str | None = None, data_dir: str | None = None, limit: int = 0,
    revision: str | None = None,
) -> Iterator[tuple[Where, dict[str, Any]]]:
    """Yield ``(where, record)`` for the first ``limit`` records (0 = all) of ``source``'s ``split``
    (``revision``: hub ids only; a local path has none)."""
    from datasets import load_dataset

    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        it: Iterator[tuple[Where, dict[str, Any]]] = rows(str(path), "json", path.name)  # with file:line
    elif path.is_file():
        ds = load_dataset(_builder(path), data_files=str(path), split="train")
        it = (((f"{path} row {i}", None), r) for i, r in enumerate(ds))
    elif path.is_dir() or HUB_ID.match(source):
        if not path.is_dir() and source.startswith((".", "/", "~")):
            raise DataError(source, None, "local path does not exist")
        try:
            hub = {} if path.is_dir() else {"revision": revision}
            ds = load_dataset(str(path) if path.is_dir() else source, name=config, data_dir=data_dir, split=split, **hub)
        except ValueError as e:  # e.g. an unknown split: name what exists
            raise DataError(source, None, f"cannot load split {split!r}: {e}") from e
        it = (((f"{source}[{split}] row {i}", None), r) for i, r in enumerate(ds))
    else:
        raise DataError(source, None, "neither an existing local file or folder nor a hub id (org/name)")
    for n, item in enumerate(it):
        if limit and n >= limit:
            return
        yield item


def messages(value: Any, name: str, where: Where) -> list[dict[str, str]]:
    """A list of ``{role, content}`` chat messages (extra keys dropped); else DataError at ``where``."""
    if not isinstance(value, list) or not value:
        raise DataError(where[0], where[1], f"field {name!r} must be a non-empty list of messages, got {value!r}"[:300])
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(where[0], where[1], f"{name}[{i}] must be a {{role, content}} message, got {m!r}"[:300])
        out.append({"role": m["role"], "content": m["content"]})
    return out
