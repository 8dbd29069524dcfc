"""Objectives of a ``tune`` study, computed from the stance tracer's checkpoint records (pure functions).

Let v_t be the value vector of split S (``tune.split``; ``test`` = the held-out topics), topic "all", at
checkpoint t; t0 = the SFT checkpoint (step 0 of every trial) and t1 = the trial's checkpoint.

- ``toward_target`` (maximise): M = v_t1[target] − v_t0[target], the signed drift toward the target stance
  (``tune.target``; ``auto`` = the stance the preference set pushes toward).
- ``preserve`` (minimise): |drift| = ½ Σ_s |v_t1[s] − v_t0[s]|, the total-variation distance between the
  value vectors (0 = values kept, 1 = moved to a disjoint profile).
- ``align`` (maximise): alignment of v_t1 to a reference profile r, 1 − JSD(v, r) (base 2) or
  1 − W1(v, r)/(N − 1) (drift.py). A per-topic reference gives the mean over its topics scored on S.
- ``capability`` (minimise): the held-out NLL of the capability probe at t1 (``capability/heldout_nll``,
  mean over the assistant tokens of general-instruction rows never used in training).

Final values compare the phase probe sets of t0 and the last checkpoint (every annotated probe by
default); the running values reported for pruning at intermediate checkpoints use the trace set at both
ends, so a series compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.core.errors import check
from valuedrift.core.paths import DATA
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.data.topics import known_topics
from valuedrift.metrics.drift import jsd_alignment, w1_alignment
from valuedrift.stance.reference import config_fail, parse_profiles
from valuedrift.stance.reference import load_reference as stance_load_reference
from valuedrift.stance.vectors import profile_of

DIRECTIONS: dict[str, str] = {
    "toward_target": "maximize",
    "preserve": "minimize",
    "align": "maximize",
    "capability": "minimize",
}
CAPABILITY_METRIC = "capability/heldout_nll"
BANK_DIR = DATA / "v_prism"  # reference topics are checked against this bank's topics.jsonl


def vector(vectors: list[dict[str, Any]], split: str, topic: str = ALL) -> dict[str, float]:
    """The value vector of (split, topic) from a record's ``trace`` or ``full`` rows."""
    return profile_of(vectors, split, topic)


def topics_of(vectors: list[dict[str, Any]], split: str) -> list[str]:
    return sorted({r["topic"] for r in vectors if r["split"] == split and r["topic"] != ALL})


def parse_reference(obj: Any, key: str) -> dict[str, dict[str, float]]:
    """A reference profile given inline -> {topic or "all": profile} (:func:`valuedrift.stance.reference.parse_profiles`).

    Accepted: one profile ``{support, neutral, oppose}`` (compared with the split's "all" vector), or a
    mapping of topic slugs (and/or ``all``) to profiles.
    """
    return parse_profiles(obj, key, config_fail, known_topics(BANK_DIR))


def load_reference(spec: dict[str, Any] | str, profiles_dir: str | Path, key: str = "tune.reference") -> dict[str, dict[str, float]]:
    """An inline profile or topic mapping, a JSON/YAML file, or a profile name in ``<eval.reference_profiles>``
    (e.g. ``uniform``): every form params.yaml documents for ``tune.reference``."""
    return stance_load_reference(spec, profiles_dir, key, known_topics(BANK_DIR))


@dataclass
class ObjectiveSpec:
    """What a study optimises, resolved (target a stance, reference loaded)."""
    names: list[str]
    target: str
    split: str
    reference: dict[str, dict[str, float]] | None = None
    alignment: str = "jsd"

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[n] for n in self.names]

    def check_reference_topics(self, vectors: list[dict[str, Any]]) -> None:
        """A per-topic reference must name at least one topic the objective's split scores."""
        if self.reference is None or "align" not in self.names or ALL in self.reference:
            return
        scored = topics_of(vectors, self.split)
        check(
            any(t in scored for t in self.reference),
            "tune.reference",
            f"none of its topics ({', '.join(self.reference)}) is scored on split {self.split!r} ({', '.join(scored)})",
        )

    def alignment_of(self, vectors: list[dict[str, Any]]) -> float:
        metric = jsd_alignment if self.alignment == "jsd" else w1_alignment
        assert self.reference is not None
        if ALL in self.reference:
            return metric(vector(vectors, self.split), self.reference[ALL])
        scored = topics_of(vectors, self.split)
        scores = [metric(vector(vectors, self.split, t), r) for t, r in self.reference.items() if t in scored]
        return float(sum(scores) / len(scores))

    def values(self, start: dict[str, Any], record: dict[str, Any], final: bool) -> dict[str, float]:
        """Objective values at ``record`` against the SFT checkpoint ``start`` (both tracer records).

        ``final``: compare the phase ("full") vectors; otherwise the trace vectors (running values).
        """
        which = "full" if final else "trace"
        v0, v1 = start[which], record[which]
        out = {}
        for name in self.names:
            if name == "toward_target":
                out[name] = vector(v1, self.split)[self.target] - vector(v0, self.split)[self.target]
            elif name == "preserve":
                a, b = vector(v0, self.split), vector(v1, self.split)
                out[name] = 0.5 * sum(abs(b[s] - a[s]) for s in STANCES)
            elif name == "align":
                out[name] = self.alignment_of(v1)
            elif name == "capability":
                out[name] = float(record["metrics"][CAPABILITY_METRIC])
        return out
