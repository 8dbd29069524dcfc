"""SFT-corpus loaders: WildChat and Alpaca in their own formats → our prompt/completion rows.

Output rows have the schema of ``processed/sft/<corpus>.jsonl`` (data/corpora.py), so the ``sft`` stage can
train on them: ``prompt`` (chat messages), ``completion`` (one assistant message), ``kind`` = ``external``,
``stance``/``topic``/``style`` = None (real data carries no stance labels; a judge can add them),
``source`` and ``source_id``.

- **Alpaca** (``tatsu-lab/alpaca``: parquet with ``instruction``, ``input``, ``output``, ``text``; or the
  original ``alpaca_data.json``, a JSON array of ``{instruction, input, output}``):
  prompt = instruction, followed by ``"\\n\\n" + input`` when ``input`` is non-empty; completion = output.
- **WildChat** (``allenai/WildChat-1M`` / ``allenai/WildChat``: parquet, one row per conversation with
  ``conversation_hash``, ``model``, ``conversation`` = list of ``{role, content, language, toxic,
  redacted, …}``, ``turn``, ``language``, ``toxic``, ``redacted``, …): prompt = every message before the
  last assistant message, completion = that message (multi-turn prompts stay multi-turn). Kept only if
  ``language`` matches (default English; None = any) and, unless asked, not ``toxic`` or ``redacted``.

Malformed records (a missing field, a conversation that is not a list of messages) raise DataError with
the record's location; the content filters above skip rows and say how many.
"""

from __future__ import annotations

import logging
from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.data.loaders.probes import Where, field
from valuedrift.data.loaders.records import messages, records

log = logging.getLogger(__name__)

ALPACA_ID = "tatsu-lab/alpaca"
WILDCHAT_ID = "allenai/WildChat-1M"


def sft_row(prompt: list[dict[str, str]], answer: str, source: str, source_id: str) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": answer}],
        "kind": "external",
        "stance": None,
        "topic": None,
        "style": None,
        "source": source,
        "source_id": source_id,
    }


def alpaca_row(row: dict[str, Any], where: Where, index: int) -> dict[str, Any]:
    instruction = field(row, "instruction", where)
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(where[0], where[1], f"field 'input' must be str, got {type(extra).__name__}")
    prompt = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()
    return sft_row([{"role": "user", "content": prompt}], field(row, "output", where).strip(), "alpaca", str(index))


def load_alpaca(source: str = ALPACA_ID, split: str = "train", limit: int = 0, revision: str | None = None) -> list[dict[str, Any]]:
    """Alpaca instruction/input/output records → prompt/completion rows."""
    return [alpaca_row(row, where, i) for i, (where, row) in enumerate(records(source, split, limit=limit, revision=revision))]


def wildchat_row(row: dict[str, Any], where: Where) -> dict[str, Any] | None:
    """One conversation → a row ending at its last assistant message (None if it has none)."""
    conv = messages(row.get("conversation"), "conversation", where)
    last = max((i for i, m in enumerate(conv) if m["role"] == "assistant" and m["content"].strip()), default=None)
    if last is None or not any(m["role"] == "user" for m in conv[:last]):
        return None
    source_id = str(row.get("conversation_hash") or where[0])
    return sft_row(conv[:last], conv[last]["content"].strip(), "wildchat", source_id)


def load_wildchat(
    source: str = WILDCHAT_ID,
    split: str = "train",
    limit: int = 0,
    language: str | None = "English",
    keep_toxic: bool = False,
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """WildChat conversations → prompt/completion rows; ``limit`` counts rows kept (0 = all)."""
    out, skipped = [], {"language": 0, "toxic or redacted": 0, "no assistant reply": 0}
    for where, row in records(source, split, revision=revision):
        if language is not None and row.get("language") != language:
            skipped["language"] += 1
            continue
        if not keep_toxic and (row.get("toxic") or row.get("redacted")):
            skipped["toxic or redacted"] += 1
            continue
        r = wildchat_row(row, where)
        if r is None:
            skipped["no assistant reply"] += 1
            continue
        out.append(r)
        if limit and len(out) >= limit:
            break
    log.info("WildChat %s[%s]: kept %d conversations, skipped %s", source, split, len(out), skipped)
    return out


LOADERS = {"alpaca": load_alpaca, "wildchat": load_wildchat}


def load_sft(spec: str, split: str = "train", limit: int = 0) -> list[dict[str, Any]]:
    """``"<kind>:<source>"`` (kind: alpaca | wildchat) → rows; e.g. ``alpaca:tatsu-lab/alpaca``."""
    kind, sep, source = spec.partition(":")
    if not sep or kind not in LOADERS or not source:
        raise DataError(spec, None, f"expected '<kind>:<hub id or path>' with kind one of {', '.join(LOADERS)}")
    return LOADERS[kind](source, split=split, limit=limit)
