"""The fixed vocabulary of the study (docs/definitions.md): stances, splits, answer styles.

Topics are *not* here: they come from the probe bank's own files (:mod:`valuedrift.data.topics`).
"""

from __future__ import annotations

STANCES: tuple[str, ...] = ("support", "neutral", "oppose")
# the ordinal order of the alignment metric W1: oppose < neutral < support
ORDINAL: tuple[str, ...] = ("oppose", "neutral", "support")
SPLITS: tuple[str, ...] = ("dev", "test")
# the pseudo-topic / pseudo-split that pools every probe
ALL = "all"
STYLES: tuple[str, ...] = ("brief", "reasoned", "conversational")
