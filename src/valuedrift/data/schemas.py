"""Record types of the project's data: the probe (a value-laden question).

The topics of a probe bank are data: they come from the bank's own files (:mod:`valuedrift.data.topics`).

File reading with file:line errors lives in :mod:`valuedrift.core.io`.
"""

from __future__ import annotations

from dataclasses import dataclass


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
