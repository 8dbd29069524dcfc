"""Record types of the project's data: the probe (a value-laden question) and the V-PRISM topics.

File reading with file:line errors lives in :mod:`valuedrift.core.io`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
