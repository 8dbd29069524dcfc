"""Blind answer sets for hand labelling: sampled answers of several checkpoints, shuffled, with opaque ids.

For checkpoints c_1 … c_m and probes P (``per_topic`` per (split, topic), the same nested seeded subsets as
the stance tracer, so the trace probes are among them) we sample K answers per probe with the paper's
decoding (:func:`valuedrift.stance.sampling.generate_samples`) and write two files:

- ``answers.jsonl`` — what the labeller sees: ``{"aid", "id", "question", "proposition", "answer"}``, in a
  seeded random order; ``aid`` is an opaque id (``a`` + 4 hex digits of a seeded permutation), so neither the
  order nor the id reveals the checkpoint;
- ``key.jsonl`` — the mapping, kept apart: ``{"aid", "checkpoint", "probe_id", "topic", "split", "sample",
  "new_tokens", "finished"}``;
- ``likelihood.jsonl`` — the likelihood route on the same checkpoints and probes (τ = 1), one row per
  (checkpoint, probe) with q and the raw ℓ_s, so the route-validity study can refit τ without the weights.

Labels are written later, by reading (``labels.jsonl``: ``{"aid", "stance", "flag"}``; protocol in
data/AUTHORING.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.data.schemas import Probe


@dataclass(frozen=True)
class BlindAnswer:
    """One sampled answer with its opaque id; ``checkpoint`` stays in the key file."""

    aid: str
    checkpoint: str
    probe: Probe
    sample: int
    text: str
    new_tokens: int
    finished: bool

    def public_row(self) -> dict[str, Any]:
        return {"aid": self.aid, "id": self.probe.id, "question": self.probe.question,
                "proposition": self.probe.proposition, "answer": self.text}

    def key_row(self) -> dict[str, Any]:
        return {"aid": self.aid, "checkpoint": self.checkpoint, "probe_id": self.probe.id, "topic": self.probe.topic,
                "split": self.probe.split, "sample": self.sample, "new_tokens": self.new_tokens, "finished": self.finished}


def blind(rows: Sequence[tuple[str, Probe, Any]], seed: int) -> list[BlindAnswer]:
    """Shuffle (checkpoint, probe, Sample) rows with ``seed`` and give each an opaque id drawn without
    replacement from a seeded permutation of 0x0000–0xffff (needs fewer than 65536 rows)."""
    if len(rows) >= 0x10000:
        raise ValueError(f"{len(rows)} answers: at most 65535 fit the 4-hex-digit ids")
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    ids = rng.sample(range(0x10000), len(rows))
    out = []
    for pos, i in enumerate(order):
        ckpt, probe, s = rows[i]
        out.append(BlindAnswer(f"a{ids[pos]:04x}", ckpt, probe, s.sample, s.text, s.new_tokens, s.finished))
    return out


def sample_blind(
    checkpoints: dict[str, str], probes: Sequence[Probe], *, k: int, temperature: float, max_new_tokens: int,
    batch_size: int, seed: int, prompt_format: str = "chat", system_prompt: str | None = None,
    dtype: str = "float32", device: str = "auto", score_batch_size: int = 16,
) -> tuple[list[BlindAnswer], list[dict[str, Any]]]:
    """Sample ``k`` answers per probe from every checkpoint (name -> folder) and :func:`blind` them; also
    score the likelihood route (τ = 1) on the same probes. Returns (answers, likelihood rows)."""
    from valuedrift.models import load_model, load_tokenizer
    from valuedrift.stance.likelihood import LikelihoodScorer
    from valuedrift.stance.sampling import generate_samples

    by_id = {p.id: p for p in probes}
    rows: list[tuple[str, Probe, Any]] = []
    likelihood: list[dict[str, Any]] = []
    for name, path in checkpoints.items():
        tokenizer, model = load_tokenizer(path), load_model(path, dtype, device)
        scorer = LikelihoodScorer(tokenizer, 1.0, score_batch_size, prompt_format, system_prompt)
        likelihood += [{"checkpoint": name, **r} for r in scorer.score(model, probes, progress=True)]
        samples = generate_samples(model, tokenizer, probes, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, seed=seed, prompt_format=prompt_format,
                                   system_prompt=system_prompt, progress=True)
        rows += [(name, by_id[s.probe_id], s) for s in samples]
        del model
    return blind(rows, seed), likelihood


def write_blind(answers: Sequence[BlindAnswer], likelihood: Sequence[dict[str, Any]], out: Path) -> None:
    """``answers.jsonl`` (what the labeller sees), ``key.jsonl`` (the checkpoint mapping) and
    ``likelihood.jsonl`` in ``out``."""
    from valuedrift.core.io import write_jsonl

    write_jsonl(out / "answers.jsonl", [a.public_row() for a in answers])
    write_jsonl(out / "key.jsonl", [a.key_row() for a in answers])
    write_jsonl(out / "likelihood.jsonl", list(likelihood))
