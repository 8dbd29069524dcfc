"""Preference-data loaders: UltraFeedback (binarized) and HH-RLHF in their own formats → our pairs.

Output rows have the schema of ``processed/preferences/<set>.jsonl`` (data/preferences.py), so the ``po``
stage can train on them: conversational ``prompt`` (messages), ``chosen`` and ``rejected`` (one assistant
message each), ``chosen_stance``/``rejected_stance`` = None (real data has no stance labels; the
gap-analysis judge adds them), ``source`` and ``source_id``.

- **UltraFeedback binarized** (``HuggingFaceH4/ultrafeedback_binarized``; splits ``train_prefs``,
  ``test_prefs``, …; parquet ``data/<split>-00000-of-00001.parquet``): ``prompt`` (text), ``prompt_id``,
  ``chosen`` / ``rejected`` = whole conversations (``[{role: user}, {role: assistant}]``),
  ``score_chosen`` / ``score_rejected``. prompt = the messages before the final assistant message of
  ``chosen`` (must equal those of ``rejected``); answers = the final assistant messages.
- **HH-RLHF** (``Anthropic/hh-rlhf``; ``data_dir`` = ``harmless-base``, ``helpful-base``,
  ``helpful-online``, ``helpful-rejection-sampled``; ``train.jsonl.gz`` / ``test.jsonl.gz``): ``chosen`` /
  ``rejected`` are transcripts ``"\\n\\nHuman: …\\n\\nAssistant: …"``. Both are split into turns (Human →
  user, Assistant → assistant); prompt = the turns before the final Assistant turn, answers = the final
  Assistant turns.

A record in the wrong format raises DataError with its location. Pairs that cannot teach a preference
are skipped and counted: an empty final answer, chosen identical to rejected, or chosen and rejected
that do not share their earlier turns (this happens in HH-RLHF).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.data.loaders.probes import Where, field
from valuedrift.data.loaders.records import messages, records

log = logging.getLogger(__name__)

ULTRAFEEDBACK_ID = "HuggingFaceH4/ultrafeedback_binarized"
HH_RLHF_ID = "Anthropic/hh-rlhf"
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


class Unusable(Exception):
    """A well-formed pair that cannot teach a preference (the reason is the message)."""


def pair_row(prompt: list[dict[str, str]], chosen: str, rejected: str, source: str, source_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "chosen_stance": None,
        "rejected_stance": None,
        "source": source,
        "source_id": source_id,
        **extra,
    }


def split_last_answer(conv: list[dict[str, str]], name: str, where: Where) -> tuple[list[dict[str, str]], str]:
    """(messages before the final assistant message, that message's text)."""
    if conv[-1]["role"] != "assistant":
        raise DataError(where[0], where[1], f"{name} must end with an assistant message")
    if not any(m["role"] == "user" for m in conv[:-1]):
        raise DataError(where[0], where[1], f"{name} has no user message before its final answer")
    answer = conv[-1]["content"].strip()
    if not answer:
        raise Unusable("empty final answer")
    return conv[:-1], answer


def make_pair(chosen: list[dict[str, str]], rejected: list[dict[str, str]], where: Where, source: str, source_id: str,
              **extra: Any) -> dict[str, Any]:
    prompt, c = split_last_answer(chosen, "chosen", where)
    prompt_r, r = split_last_answer(rejected, "rejected", where)
    if [m["content"].strip() for m in prompt] != [m["content"].strip() for m in prompt_r]:
        raise Unusable("chosen and rejected differ before the final answer")
    if c == r:
        raise Unusable("chosen identical to rejected")
    return pair_row(prompt, c, r, source, source_id, **extra)


def ultrafeedback_pair(row: dict[str, Any], where: Where, index: int) -> dict[str, Any]:
    text = field(row, "prompt", where)
    chosen = messages(row.get("chosen"), "chosen", where)
    rejected = messages(row.get("rejected"), "rejected", where)
    if not any(m["role"] == "user" for m in chosen[:-1]):  # some exports hold only the answer
        chosen = [{"role": "user", "content": text}, *chosen]
        rejected = [{"role": "user", "content": text}, *rejected]
    scores = {k: row[k] for k in ("score_chosen", "score_rejected") if isinstance(row.get(k), int | float)}
    return make_pair(chosen, rejected, where, "ultrafeedback", str(row.get("prompt_id") or index), **scores)


def hh_transcript(text: str, name: str, where: Where) -> list[dict[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` → ``[{user: a}, {assistant: b}]``."""
    parts = HH_TURN.split("\n\n" + text.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise DataError(where[0], where[1], f"{name} is not an HH-RLHF transcript ('\\n\\nHuman: …\\n\\nAssistant: …')")
    return [
        {"role": "user" if who == "Human" else "assistant", "content": said.strip()}
        for who, said in zip(parts[1::2], parts[2::2], strict=True)
    ]


def hh_pair(row: dict[str, Any], where: Where, index: int) -> dict[str, Any]:
    chosen = hh_transcript(field(row, "chosen", where), "chosen", where)
    rejected = hh_transcript(field(row, "rejected", where), "rejected", where)
    return make_pair(chosen, rejected, where, "hh-rlhf", str(index))


def collect(source: str, split: str, limit: int, parse: Any, name: str, **kw: Any) -> list[dict[str, Any]]:
    """``parse(row, where, index)`` over the records of ``source`` (``kw``: :func:`records`' options), up to
    ``limit`` rows kept (0 = all); rows that raise :class:`Unusable` are skipped and counted."""
    out: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for i, (where, row) in enumerate(records(source, split, **kw)):
        try:
            out.append(parse(row, where, i))
        except Unusable as e:
            skipped[str(e)] += 1
            continue
        if limit and len(out) >= limit:
            break
    log.info("%s %s[%s]: %d pairs, skipped %s", name, source, split, len(out), dict(skipped) or "none")
    return out


def load_ultrafeedback(source: str = ULTRAFEEDBACK_ID, split: str = "train_prefs", limit: int = 0,
                       revision: str | None = None) -> list[dict[str, Any]]:
    """UltraFeedback binarized → pairs; ``limit`` counts pairs kept (0 = all)."""
    return collect(source, split, limit, ultrafeedback_pair, "UltraFeedback", revision=revision)


def load_hh_rlhf(source: str = HH_RLHF_ID, split: str = "train", limit: int = 0, data_dir: str | None = None,
                 revision: str | None = None) -> list[dict[str, Any]]:
    """HH-RLHF → pairs; ``data_dir`` picks a subset (``harmless-base``, …; None = all of them)."""
    return collect(source, split, limit, hh_pair, "HH-RLHF", data_dir=data_dir, revision=revision)


LOADERS = {"ultrafeedback": load_ultrafeedback, "hh-rlhf": load_hh_rlhf}


def load_preferences(spec: str, split: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """``"<kind>:<source>"`` (kind: ultrafeedback | hh-rlhf) → pairs, with each kind's default split."""
    kind, sep, source = spec.partition(":")
    if not sep or kind not in LOADERS or not source:
        raise DataError(spec, None, f"expected '<kind>:<hub id or path>' with kind one of {', '.join(LOADERS)}")
    kwargs: dict[str, Any] = {"limit": limit}
    if split:
        kwargs["split"] = split
    return LOADERS[kind](source, **kwargs)
