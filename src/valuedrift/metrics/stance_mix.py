"""Stance mix of an SFT corpus as a judge reads it (``valuedrift stance-mix``).

For rows i = 1..n with question q_i (the last user turn of the prompt) and response y_i (the completion),
a judge gives d_i = p_J(·|q_i, y_i) ∈ Δ(S) and the label ŝ_i = argmax_s d_i(s). The corpus' judged mix is

    share(s)  = |{i : ŝ_i = s}| / n        (labels: what the rows say, by majority)
    mean_p(s) = (1/n) Σ_i d_i(s)           (the soft version)

over all rows and per row ``kind`` (value | general for authored corpora, external for rows read from a
dataset). Rows with an authored ``stance`` label (the value rows of an authored corpus, a labelled jsonl
source) are also compared with their labels: the authored and judged mix over those rows and the
agreement of ŝ with the label (accuracy, κ, per-stance F1, confusion; metrics/agreement.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from valuedrift.core.vocab import STANCES
from valuedrift.metrics.agreement import classification_metrics
from valuedrift.metrics.value_gap import JudgeFn, message_text


def shares(labels: Sequence[str]) -> dict[str, float]:
    """Share of each stance among ``labels`` (0 for all when there are none)."""
    counts = Counter(labels)
    return {s: counts[s] / len(labels) if labels else 0.0 for s in STANCES}


def mix_of(probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    return {"n": len(labels), "share": shares(labels), "mean_p": dict(zip(STANCES, map(float, probs.mean(axis=0)), strict=True))}


def corpus_stance_mix(rows: Sequence[dict[str, Any]], judge: JudgeFn) -> dict[str, Any]:
    """The judged stance mix of ``rows`` (module docstring): ``all``, ``by_kind`` and, when some rows carry an
    authored ``stance``, ``labelled`` (authored vs judged share, agreement)."""
    if not rows:
        raise ValueError("no rows to judge")
    questions = [message_text(r["prompt"], "user") for r in rows]
    answers = [message_text(r["completion"], "assistant") for r in rows]
    probs = np.asarray(judge(questions, answers), dtype=np.float64)
    if probs.shape != (len(rows), len(STANCES)):
        raise ValueError(f"judge returned shape {probs.shape}, expected {(len(rows), len(STANCES))}")
    pred = [STANCES[j] for j in probs.argmax(axis=1)]
    kinds = [str(r.get("kind")) for r in rows]
    out: dict[str, Any] = {
        "all": mix_of(probs, pred),
        "by_kind": {k: mix_of(probs[[i for i, x in enumerate(kinds) if x == k]], [p for p, x in zip(pred, kinds, strict=True) if x == k])
                    for k in sorted(set(kinds))},
    }
    idx = [i for i, r in enumerate(rows) if r.get("stance") in STANCES]
    if idx:
        gold = [rows[i]["stance"] for i in idx]
        judged = [pred[i] for i in idx]
        out["labelled"] = {"n": len(idx), "authored_share": shares(gold), "judged_share": shares(judged),
                           "agreement": classification_metrics(gold, judged)}
    return out
