"""Generic JSON-Lines loaders (source kind ``jsonl``): any SFT or preference data already in chat form.

A field written as "text or messages" is either a string or a non-empty list of ``{role, content}``
messages (extra keys dropped). A string ``prompt`` is one user turn; a string ``completion``, ``chosen``
or ``rejected`` is one assistant turn.

- **SFT rows** (:func:`load_sft_jsonl`), one of
  - ``prompt`` + ``completion`` (text or messages): the conversation is prompt followed by completion;
  - ``messages``: a whole conversation;

  it must end with a non-empty assistant message (the completion) after at least one user message. Output:
  the ``processed/sft/<corpus>.jsonl`` row of :func:`valuedrift.data.loaders.sft.sft_row` (``prompt`` =
  every message before the final one, ``completion`` = that one, ``kind`` = ``external``, ``source`` =
  ``jsonl``). Optional ``id`` (→ ``source_id``; default: the row index), ``stance`` (support | neutral |
  oppose: a label the stance-mix command compares its judge with) and ``topic`` (text) are kept.
- **Preference pairs** (:func:`load_pairs_jsonl`): ``prompt``, ``chosen``, ``rejected`` (text or messages).
  chosen and rejected are the answer turns: their last message is the answer and must be an assistant
  message; earlier messages in them continue the prompt and must be the same on both sides. Output: the
  ``processed/preferences/<set>.jsonl`` pair of :func:`valuedrift.data.loaders.preferences.pair_row`;
  optional ``id``, ``topic``, ``chosen_stance`` and ``rejected_stance`` (stances) are kept, so a file that
  labels both sides is analysed with its own labels. Pairs that cannot teach a preference (an empty answer,
  chosen identical to rejected) are skipped and counted, as for UltraFeedback and HH-RLHF.

A local ``.jsonl`` file reports a malformed row as ``file:line`` with the field; a folder or hub id in the
same format goes through ``datasets.load_dataset`` (``<source>[<split>] row <i>``).
"""

from __future__ import annotations

from typing import Any

from valuedrift.core.errors import DataError
from valuedrift.core.vocab import STANCES
from valuedrift.data.loaders.preferences import collect, make_pair
from valuedrift.data.loaders.probes import Where, field
from valuedrift.data.loaders.records import messages
from valuedrift.data.loaders.sft import sft_row


def turns(row: dict[str, Any], name: str, where: Where, role: str) -> list[dict[str, str]]:
    """Field ``name`` as chat messages: a string is one ``role`` message; a list must be messages."""
    value = row.get(name)
    if isinstance(value, str) or value is None:
        return [{"role": role, "content": field(row, name, where)}]
    return messages(value, name, where)


def optional_label(row: dict[str, Any], name: str, where: Where) -> str | None:
    """An optional stance label (support | neutral | oppose), or None when absent."""
    value = row.get(name)
    if value is not None and value not in STANCES:
        raise DataError(where[0], where[1], f"field {name!r} must be one of {', '.join(STANCES)} (or absent), got {value!r}")
    return value


def optional_text(row: dict[str, Any], name: str, where: Where) -> str | None:
    return None if row.get(name) is None else field(row, name, where)


def source_id(row: dict[str, Any], index: int) -> str:
    return str(row["id"]) if row.get("id") is not None else str(index)


def sft_jsonl_row(row: dict[str, Any], where: Where, index: int) -> dict[str, Any]:
    """One SFT record (module docstring) → a prompt/completion row."""
    if row.get("prompt") is None and row.get("messages") is not None:
        conv, last = messages(row["messages"], "messages", where), "messages"
    else:
        conv, last = turns(row, "prompt", where, "user") + turns(row, "completion", where, "assistant"), "completion"
    if conv[-1]["role"] != "assistant":
        raise DataError(where[0], where[1], f"field {last!r} must end with an assistant message, got role {conv[-1]['role']!r}")
    answer = conv[-1]["content"].strip()
    if not answer:
        raise DataError(where[0], where[1], f"field {last!r}: the final assistant message is empty")
    if not any(m["role"] == "user" for m in conv[:-1]):
        first = "messages" if last == "messages" else "prompt"
        raise DataError(where[0], where[1], f"field {first!r} has no user message before the final answer")
    out = sft_row(conv[:-1], answer, "jsonl", source_id(row, index))
    out["stance"] = optional_label(row, "stance", where)
    out["topic"] = optional_text(row, "topic", where)
    return out


def pair_jsonl_row(row: dict[str, Any], where: Where, index: int) -> dict[str, Any]:
    """One preference record (module docstring) → a pair (raises Unusable for a pair to skip)."""
    prompt = turns(row, "prompt", where, "user")
    chosen = turns(row, "chosen", where, "assistant")
    rejected = turns(row, "rejected", where, "assistant")
    pair = make_pair(prompt + chosen, prompt + rejected, where, "jsonl", source_id(row, index))
    for name in ("chosen_stance", "rejected_stance"):
        pair[name] = optional_label(row, name, where)
    topic = optional_text(row, "topic", where)
    if topic is not None:
        pair["topic"] = topic
    return pair


def load_sft_jsonl(source: str, split: str = "train", limit: int = 0, revision: str | None = None,
                   data_dir: str | None = None) -> list[dict[str, Any]]:
    """SFT rows from a JSON-Lines file, a folder of them, or a hub dataset in that format."""
    return collect(source, split, limit, sft_jsonl_row, "SFT jsonl", revision=revision, data_dir=data_dir)


def load_pairs_jsonl(source: str, split: str = "train", limit: int = 0, revision: str | None = None,
                     data_dir: str | None = None) -> list[dict[str, Any]]:
    """Preference pairs from a JSON-Lines file, a folder of them, or a hub dataset in that format."""
    return collect(source, split, limit, pair_jsonl_row, "preference jsonl", revision=revision, data_dir=data_dir)
