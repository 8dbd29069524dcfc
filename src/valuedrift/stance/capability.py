"""Capability probe: held-out negative log-likelihood on general-instruction rows.

A fixed, seeded set of ``n`` general-instruction rows is held out of every SFT corpus. At each
checkpoint the probe computes, over the assistant tokens y of those rows given their chat-formatted
instruction x,

    NLL = − (1 / Σ|y|) Σ_rows Σ_i log π(y_i | x, y_<i)        and        PPL = exp(NLL),

so value drift can be read against general capability (a rising NLL means the model is getting worse
at being an assistant, not only changing its stances).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from valuedrift.stance.likelihood import format_prompt
from valuedrift.stance.request_scoring import Request, score_requests


def heldout_general_ids(general: Sequence[dict[str, str]], n: int, seed: int) -> set[str]:
    """Ids of the ``n`` general rows reserved for the capability probe (never used for training)."""
    ids = sorted(r["id"] for r in general)
    return set(random.Random(f"capability:{seed}").sample(ids, min(n, len(ids))))


@dataclass
class CapabilityProbe:
    tokenizer: Any
    rows: list[dict[str, str]]
    batch_size: int = 16
    prompt_format: str = "chat"

    def requests(self) -> list[Request]:
        out = []
        for r in self.rows:
            ctx = self.tokenizer(format_prompt(self.tokenizer, r["instruction"], self.prompt_format), add_special_tokens=False)
            cont = self.tokenizer(r["response"], add_special_tokens=False)
            out.append(Request(tuple(ctx["input_ids"]), tuple(cont["input_ids"])))
        return out

    def measure(self, model: Any) -> dict[str, float]:
        if not self.rows:
            return {}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores = score_requests(model, self.requests(), self.batch_size, pad)
        nll = float(-scores[:, 0].sum() / scores[:, 1].sum())
        return {"capability/heldout_nll": nll, "capability/heldout_ppl": math.exp(min(nll, 50.0))}
