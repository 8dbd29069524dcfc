"""Training data from a real dataset: a ``source`` block of params (:class:`DataSource`) → rows in our schema.

``load_source(src, "sft", key, seed)`` reads an SFT corpus (kinds ``wildchat``, ``alpaca``, ``jsonl``) as
``processed/sft/<corpus>.jsonl`` rows; ``load_source(src, "preferences", …)`` reads preference pairs (kinds
``ultrafeedback``, ``hh-rlhf``, ``jsonl``) as ``processed/preferences/<set>.jsonl`` rows. The loaders
(data/loaders/) describe each format. Then:

1. ``limit`` bounds what the loader keeps (0 = all);
2. ``sample`` keeps a seeded subset of that many rows, in their original order (seed: the caller's, derived
   from params ``seed``); asking for more rows than were read is a ConfigError at ``<key>.source.sample``;
3. rows that ask a held-out test question are dropped (data/leaks.py: by text, with a warning).

A hub id without ``revision`` is read as the hub holds it today: allowed, with a warning naming the key.
What was read is described by :attr:`Loaded.info` (kind, path, hub, revision, split, data_dir, counts),
which the stages write beside the data with the MLflow digest of the rows.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from valuedrift.config.schema.data import PREFERENCE_SOURCE_KINDS, SFT_SOURCE_KINDS, DataSource
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.data.leaks import drop_test_overlap
from valuedrift.data.loaders.jsonl import load_pairs_jsonl, load_sft_jsonl
from valuedrift.data.loaders.preferences import load_hh_rlhf, load_ultrafeedback
from valuedrift.data.loaders.records import HUB_ID
from valuedrift.data.loaders.sft import load_alpaca, load_wildchat
from valuedrift.data.schemas import Probe

log = logging.getLogger(__name__)

Use = Literal["sft", "preferences"]
LoaderFn = Callable[..., list[dict[str, Any]]]


@dataclass
class Loaded:
    """Rows read from a source, and a description of the read (JSON-ready)."""

    rows: list[dict[str, Any]]
    info: dict[str, Any]


def _loader(src: DataSource, use: Use) -> LoaderFn:
    """The loader of ``src.kind`` for ``use``, with the options only some kinds take bound."""
    if use == "sft":
        loaders: dict[str, LoaderFn] = {
            "wildchat": partial(load_wildchat, language=src.language),
            "alpaca": load_alpaca,
            "jsonl": partial(load_sft_jsonl, data_dir=src.data_dir),
        }
        kinds = SFT_SOURCE_KINDS
    else:
        loaders = {
            "ultrafeedback": load_ultrafeedback,
            "hh-rlhf": partial(load_hh_rlhf, data_dir=src.data_dir),
            "jsonl": partial(load_pairs_jsonl, data_dir=src.data_dir),
        }
        kinds = PREFERENCE_SOURCE_KINDS
    assert set(loaders) == set(kinds), "a source kind without a loader"
    return loaders[src.kind]


def is_hub(path: str) -> bool:
    """A hub id ``org/name`` that is not an existing local path."""
    return not Path(path).expanduser().exists() and bool(HUB_ID.match(path))


def check_source(src: DataSource, use: Use, key: str) -> None:
    """What params validation cannot see: a ``data_dir`` for a kind that takes none; warns about an
    unpinned hub id (``revision`` null) and a revision given for a local path (unused)."""
    if src.data_dir is not None and src.kind not in ("hh-rlhf", "jsonl"):
        raise ConfigError(f"{key}.data_dir", f"only the hh-rlhf and jsonl kinds read a subfolder, not {src.kind!r}")
    _loader(src, use)  # the kind belongs to this use (params validation checked it too)
    if is_hub(src.path) and src.revision is None:
        log.warning("%s.revision: hub dataset %r is not pinned to a revision, so it reads whatever the hub holds "
                    "today; set %s.revision to a commit sha for reproducible data", key, src.path, key)
    elif not is_hub(src.path) and src.revision is not None:
        log.warning("%s.revision: %r is a local path, so revision %r is unused", key, src.path, src.revision)


def subsample(rows: list[dict[str, Any]], n: int, seed: int, key: str) -> list[dict[str, Any]]:
    """A seeded subset of ``n`` rows in their original order (``n`` = 0: all of them)."""
    if not n:
        return rows
    if n > len(rows):
        raise ConfigError(f"{key}.sample", f"asks for {n} rows but the source yields only {len(rows)}")
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def load_source(src: DataSource, use: Use, key: str, seed: int, questions: list[Probe]) -> Loaded:
    """Read ``src`` (the block at ``key``, e.g. ``prepare_data.corpora.wild.source``) for ``use`` (module
    docstring); ``questions`` = the probe bank, whose test split must not reach the rows."""
    check_source(src, use, key)
    read = _loader(src, use)(src.path, split=src.resolved_split, limit=src.limit, revision=src.revision)
    if not read:
        raise DataError(src.path, None, f"no usable {'rows' if use == 'sft' else 'pairs'} in split {src.resolved_split!r} ({key})")
    rows, dropped = drop_test_overlap(subsample(read, src.sample, seed, key), questions, key)
    if not rows:
        raise DataError(src.path, None, f"every row read asks a held-out test question ({key})")
    info = {
        "kind": src.kind,
        "path": src.path,
        "hub": is_hub(src.path),
        "revision": src.revision,
        "split": src.resolved_split,
        "data_dir": src.data_dir,
        "read": len(read),
        "sampled": src.sample or None,
        "dropped_test_overlap": dropped,
        "rows": len(rows),
    }
    log.info("%s: %d rows from %s %s[%s]%s", key, len(rows), src.kind, src.path, src.resolved_split,
             f" @ {src.revision}" if src.revision else "")
    return Loaded(rows, info)
