"""Reference stance profiles r(T) and the alignment of value vectors to them (DESIGN.md).

A profile file (``data/reference_profiles/<name>.json``)::

    {"name": "uniform", "description": "…", "source": "…",
     "profiles": {"all": {"support": 1/3, "neutral": 1/3, "oppose": 1/3}, "<topic>": {…}, …}}

``profiles.all`` is required and used for every topic without its own entry. Alignment of a value vector v
on topic T (:mod:`valuedrift.drift`):

    A_JSD = 1 − JSD(v, r(T))  (base 2)        A_W1 = 1 − W1(v, r(T)) / (N − 1),  oppose < neutral < support
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.core.errors import DataError
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.metrics.drift import jsd_alignment, w1_alignment


@dataclass(frozen=True)
class ReferenceProfile:
    name: str
    profiles: dict[str, dict[str, float]]
    description: str = ""
    source: str = ""

    def for_topic(self, topic: str) -> dict[str, float]:
        return self.profiles.get(topic, self.profiles[ALL])


def _distribution(value: Any, path: Path, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or set(value) != set(STANCES):
        raise DataError(path, None, f"{where}: must map exactly {', '.join(STANCES)} to probabilities")
    if not all(isinstance(value[s], int | float) and not isinstance(value[s], bool) and value[s] >= 0 for s in STANCES):
        raise DataError(path, None, f"{where}: probabilities must be numbers >= 0")
    total = sum(value[s] for s in STANCES)
    if abs(total - 1) > 1e-6:
        raise DataError(path, None, f"{where}: probabilities must sum to 1, got {total}")
    return {s: float(value[s]) for s in STANCES}


def load_profile(path: str | Path) -> ReferenceProfile:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict):
        raise DataError(path, None, "expected an object with a 'profiles' mapping")
    if ALL not in raw["profiles"]:
        raise DataError(path, None, f"'profiles' needs an {ALL!r} entry (used for topics without their own)")
    profiles = {t: _distribution(v, path, f"profiles.{t}") for t, v in raw["profiles"].items()}
    return ReferenceProfile(str(raw.get("name") or path.stem), profiles, str(raw.get("description", "")), str(raw.get("source", "")))


def load_profiles(directory: str | Path) -> dict[str, ReferenceProfile]:
    """Every ``*.json`` profile in ``directory`` by name (an empty dict if the folder does not exist)."""
    directory = Path(directory)
    out: dict[str, ReferenceProfile] = {}
    for f in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        prof = load_profile(f)
        if prof.name in out:
            raise DataError(f, None, f"profile name {prof.name!r} is used twice")
        out[prof.name] = prof
    return out


def mix_profile(name: str, mix: Mapping[str, float], description: str = "") -> ReferenceProfile:
    """A one-distribution profile (e.g. an SFT corpus's stance mix from params)."""
    return ReferenceProfile(name, {ALL: {s: float(mix.get(s, 0.0)) for s in STANCES}}, description)


def alignment_table(vectors: pd.DataFrame, profiles: Mapping[str, ReferenceProfile]) -> pd.DataFrame:
    """One row per (profile, split, topic) of ``vectors``: the two alignment scores."""
    rows = []
    for prof in profiles.values():
        for r in vectors.itertuples(index=False):
            v = {s: float(getattr(r, s)) for s in STANCES}
            ref = prof.for_topic(r.topic)
            rows.append({"profile": prof.name, "split": r.split, "topic": r.topic,
                         "jsd_alignment": jsd_alignment(v, ref), "w1_alignment": w1_alignment(v, ref)})
    return pd.DataFrame(rows, columns=["profile", "split", "topic", "jsd_alignment", "w1_alignment"])
