"""Reference stance profiles r(T) and the alignment of value vectors to them (docs/definitions.md).

A profile file (``data/reference_profiles/<name>.json``)::

    {"name": "uniform", "description": "…", "source": "…",
     "profiles": {"all": {"support": 1/3, "neutral": 1/3, "oppose": 1/3}, "<topic>": {…}, …}}

``profiles.all`` is required and used for every topic without its own entry. :func:`parse_profiles` is the
one parser of profiles: files here, ``tune.reference`` in params (:func:`load_reference`). Alignment of a value vector v
on topic T (:mod:`valuedrift.drift`):

    A_JSD = 1 − JSD(v, r(T))  (base 2)        A_W1 = 1 − W1(v, r(T)) / (N − 1),  oppose < neutral < support
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import yaml

from valuedrift.core.errors import ConfigError, DataError
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


Fail = Callable[[str, str], NoReturn]
SUM_TOLERANCE = 1e-3


def data_fail(path: Path) -> Fail:
    """Report a bad profile in a file as a :class:`DataError` naming the file and the field."""

    def fail(where: str, message: str) -> NoReturn:
        raise DataError(path, None, f"{where}: {message}")

    return fail


def config_fail(where: str, message: str) -> NoReturn:
    """Report a bad profile in params as a :class:`ConfigError` at the dotted key ``where``."""
    raise ConfigError(where, message)


def parse_distribution(value: Any, where: str, fail: Fail) -> dict[str, float]:
    """One distribution {support, neutral, oppose}: shares >= 0 summing to 1 (within 1e-3), renormalised."""
    if not isinstance(value, dict) or set(value) != set(STANCES):
        fail(where, f"must map exactly {', '.join(STANCES)} to probabilities, got {value!r}")
    for s in STANCES:
        v = value[s]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            fail(f"{where}.{s}", f"probabilities must be numbers >= 0, got {v!r}")
    total = sum(value[s] for s in STANCES)
    if abs(total - 1) > SUM_TOLERANCE:
        fail(where, f"probabilities must sum to 1, got {total}")
    return {s: float(value[s] / total) for s in STANCES}


def parse_profiles(obj: Any, where: str, fail: Fail, topics: Collection[str] | None = None,
                   require_all: bool = False) -> dict[str, dict[str, float]]:
    """The one parser of reference profiles -> {topic or "all": distribution}.

    Accepted: one distribution ``{support, neutral, oppose}`` (the profile of every topic, key "all"), a
    mapping of topics (and/or ``all``) to distributions, or a profile file's object ``{"name", …,
    "profiles": {…}}``. ``topics``: the allowed topic names besides "all" (None = any);
    ``require_all``: the mapping needs an "all" entry.
    """
    if isinstance(obj, dict) and "profiles" in obj:
        obj, where = obj["profiles"], f"{where}.profiles" if where else "profiles"
    if not isinstance(obj, dict) or not obj:
        fail(where or "profiles", f"expected a profile or a mapping of topics to profiles, got {obj!r}")
    if set(obj) <= set(STANCES):
        return {ALL: parse_distribution(obj, where, fail)}
    if require_all and ALL not in obj:
        fail(where or "profiles", f"needs an {ALL!r} entry (used for topics without their own)")
    out = {}
    for topic, value in obj.items():
        key = f"{where}.{topic}" if where else str(topic)
        if topics is not None and topic != ALL and topic not in topics:
            fail(key, f"unknown topic; allowed: {ALL}, {', '.join(topics)}")
        out[str(topic)] = parse_distribution(value, key, fail)
    return out


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
    profiles = parse_profiles(raw, "", data_fail(path), require_all=True)
    return ReferenceProfile(str(raw.get("name") or path.stem), profiles, str(raw.get("description", "")), str(raw.get("source", "")))


def load_reference(spec: Any, profiles_dir: str | Path, key: str, topics: Collection[str] | None = None) -> dict[str, dict[str, float]]:
    """A reference given in params (e.g. ``tune.reference``) -> {topic or "all": distribution}.

    ``spec``: an inline distribution or topic mapping; a JSON/YAML file holding either (or a profile
    file's object); or the name of a profile in ``profiles_dir`` (eval.reference_profiles, e.g.
    ``uniform``). Every error is a :class:`ConfigError` at ``key``.
    """
    if not isinstance(spec, str):
        return parse_profiles(spec, key, config_fail, topics)
    path = Path(spec)
    if not path.is_file():
        named = Path(profiles_dir) / f"{spec}.json"
        if not named.is_file():
            by_name = {p.name: p for p in _profiles_or_fail(profiles_dir, key).values()}
            if spec not in by_name:
                raise ConfigError(key, f"{spec!r} is neither a file nor a profile in {profiles_dir}/")
            return parse_profiles(by_name[spec].profiles, key, config_fail, topics)
        path = named
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(key, f"{path} is not valid JSON/YAML: {e}") from e
    return parse_profiles(obj, f"{key} ({path})", config_fail, topics)


def _profiles_or_fail(directory: str | Path, key: str) -> dict[str, ReferenceProfile]:
    try:
        return load_profiles(directory)
    except DataError as e:
        raise ConfigError(key, str(e)) from e


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
