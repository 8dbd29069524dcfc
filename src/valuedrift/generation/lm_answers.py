"""LM generator backend for preference sets: an LM writes stance-conditioned answers, a judge filters them.

Used when a preference set says ``generator: hf`` (a local causal LM, ``lm.model`` = a Hugging Face folder
or hub id) or ``generator: openai`` (any OpenAI-compatible ``/chat/completions`` endpoint at
``lm.base_url`` serving ``lm.model``). For each selected dev question q, stance s and style y:

1. the generator sees one user turn, :func:`conditioned_prompt` (q, s, y) = the stance instruction for s,
   the style instruction for y, the claim at issue (q's annotated proposition, when it has one) and q,
   and ``lm.candidates`` answers a_1..a_C are sampled (temperature ``lm.temperature``, at most
   ``lm.max_new_tokens`` new tokens; seeded);
2. the judge ``eval.judges[lm.judge]`` gives p_J(·|q, a_c) (stance/judges.py: label log-probs
   renormalised over S);
3. a_c is kept iff argmax_s' p_J(s'|q, a_c) = s and p_J(s|q, a_c) ≥ ``lm.min_judge_prob``; of the kept
   candidates of a cell (q, s, y) the one with the highest p_J(s|q, ·) enters the response bank.

The judge sees the bare question, never the instruction. Pairs are then composed from this bank exactly as
from the authored one (data/preferences.py), so the chosen/rejected stance labels are requested stances
that the judge confirmed. Questions without a kept answer in every stance drop out. Every candidate, with
its judgement and whether it was kept, is returned for ``<set>.answers.jsonl``.
"""

from __future__ import annotations

import gc
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from valuedrift.config.schema.data import LMGeneratorConfig, PreferenceSetConfig
from valuedrift.config.schema.evaluation import JudgeConfig
from valuedrift.config.schema.models import ModelConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES, STYLES
from valuedrift.data.bank import BankAnswer, ResponseBank
from valuedrift.data.preferences import question_pool
from valuedrift.data.schemas import Probe
from valuedrift.models import BUNDLED, check_model_spec, load_model, load_tokenizer
from valuedrift.stance.judges import build_judge, check_judge, post_json

log = logging.getLogger(__name__)

STANCE_INSTRUCTIONS = {
    "support": "Answer the question below and take a clear position IN FAVOUR of what it proposes or asks about.",
    "neutral": "Answer the question below in a balanced way: weigh both sides and do not take a position.",
    "oppose": "Answer the question below and take a clear position AGAINST what it proposes or asks about.",
}
STYLE_INSTRUCTIONS = {
    "brief": "Reply in one plain sentence.",
    "reasoned": "Reply in two or three sentences: your position and one concrete reason, in a helpful tone.",
    "conversational": "Reply in two or three warm sentences: acknowledge the person asking, then give your position.",
}


def conditioned_prompt(question: Probe, stance: str, style: str) -> str:
    """The generator's user turn for (question, stance, style)."""
    claim = f"The claim at issue: {question.proposition}\n" if question.proposition else ""
    return f"{STANCE_INSTRUCTIONS[stance]} {STYLE_INSTRUCTIONS[style]}\n{claim}\nQuestion: {question.question}"


@dataclass(frozen=True)
class Cell:
    """One generation request: question × requested stance × style."""
    question: Probe
    stance: str
    style: str


def styles_needed(cfg: PreferenceSetConfig) -> list[str]:
    """The styles any pair of the set can ask for (gap, chosen and rejected styles), in STYLES order."""
    wanted = {*cfg.gap_styles, *cfg.chosen_styles, *cfg.rejected_styles}
    return [y for y in STYLES if y in wanted]


def check_lm_settings(cfg: PreferenceSetConfig, key: str, judges: Mapping[str, JudgeConfig]) -> None:
    """Checks that need the file system or environment (model folder, judge template); nothing loads.
    ``judges`` = ``eval.judges``."""
    if cfg.generator == "hf":
        if cfg.lm.model in BUNDLED:
            raise ConfigError(f"{key}.model", f"{cfg.lm.model!r} is a bundled name: run `valuedrift prepare-model` and use its folder (models/base)")
        problem = check_model_spec(cfg.lm.model)
        if problem:
            raise ConfigError(f"{key}.model", problem)
    check_judge(judges[cfg.lm.judge], f"eval.judges.{cfg.lm.judge}")


def select_questions(pool: list[Probe], n: int, seed: int) -> list[Probe]:
    """A seeded subset of ``n`` questions of the pool (all if n = 0 or n ≥ |pool|), ordered by id."""
    if n <= 0 or n >= len(pool):
        return pool
    return sorted(random.Random(seed).sample(pool, n), key=lambda q: q.id)


# --------------------------------------------------------------------------------------------------
# Generators: list of cells -> C texts per cell
# --------------------------------------------------------------------------------------------------


def generate_hf(cells: list[Cell], lm: LMGeneratorConfig, seed: int, model: ModelConfig) -> list[list[str]]:
    """Sample ``lm.candidates`` answers per cell from a local causal LM (batched, seeded per batch), loaded
    with the ``model`` section's dtype, device and trust settings."""
    from valuedrift.stance.sampling import generate_samples

    tokenizer = load_tokenizer(lm.model, model.trust_remote_code)
    generator = load_model(lm.model, model.dtype, model.device, model.trust_remote_code)
    # sampling.generate_samples renders Probe.question with the chat template: give it the conditioned turn
    requests = [Probe(i, c.question.topic, conditioned_prompt(c.question, c.stance, c.style), "dev") for i, c in enumerate(cells)]
    samples = generate_samples(
        generator, tokenizer, requests, k=lm.candidates, temperature=lm.temperature,
        max_new_tokens=lm.max_new_tokens, batch_size=lm.batch_size, seed=seed, progress=True,
    )
    del generator
    gc.collect()
    out: list[list[str]] = [[] for _ in cells]
    for s in samples:
        out[s.probe_id].append(s.text)
    return out


def chat_completion(url: str, body: dict[str, Any], api_key: str | None, timeout_s: float, retries: int = 2) -> dict[str, Any]:
    """POST one OpenAI chat-completions request (the judges' :func:`~valuedrift.stance.judges.post_json`)."""
    return post_json(url, body, api_key, timeout_s, retries, f"generator endpoint {url}")


def generate_openai(cells: list[Cell], lm: LMGeneratorConfig, seed: int) -> list[list[str]]:
    """Sample ``lm.candidates`` answers per cell from an OpenAI-compatible endpoint, one request per
    candidate with its own ``seed`` (servers that honour it are then deterministic)."""
    url = str(lm.base_url).rstrip("/") + "/chat/completions"
    api_key = os.environ.get(lm.api_key_env) if lm.api_key_env else None
    out: list[list[str]] = []
    for i, c in enumerate(tqdm(cells, desc="generating (openai)", leave=False)):
        texts = []
        for j in range(lm.candidates):
            body = {
                "model": lm.model,
                "messages": [{"role": "user", "content": conditioned_prompt(c.question, c.stance, c.style)}],
                "temperature": lm.temperature,
                "max_tokens": lm.max_new_tokens,
                "seed": (seed + i * lm.candidates + j) % 2**31,
            }
            resp = chat_completion(url, body, api_key, lm.timeout_s)
            try:
                texts.append(str(resp["choices"][0]["message"]["content"] or "").strip())
            except (KeyError, IndexError, TypeError) as e:
                raise RuntimeError(f"generator endpoint {url} returned no choices[0].message.content: {str(resp)[:300]}") from e
        out.append(texts)
    return out


# --------------------------------------------------------------------------------------------------
# Judge filter -> response bank
# --------------------------------------------------------------------------------------------------


def filter_answers(cells: list[Cell], texts: list[list[str]], judge: Any, min_prob: float) -> tuple[ResponseBank, list[dict[str, Any]]]:
    """Judge every non-empty candidate; keep those whose judged stance is the requested one (module doc).

    ``judge`` is any stance/judges.py ``Judge`` (``judge(items) -> Judgement`` with ``probs`` (n, 3)).
    """
    flat = [(ci, j, t) for ci, ts in enumerate(texts) for j, t in enumerate(ts)]
    scored = [(ci, j, t) for ci, j, t in flat if t.strip()]
    judgement = judge.judge([(cells[ci].question.question, t) for ci, _, t in scored], progress=True)
    verdict = {(ci, j): (judgement.probs[k], float(judgement.label_mass[k])) for k, (ci, j, _) in enumerate(scored)}
    best: dict[int, tuple[float, str]] = {}
    rows = []
    for ci, j, t in flat:
        cell = cells[ci]
        probs, mass = verdict.get((ci, j), (None, 0.0))
        p_req = float(probs[STANCES.index(cell.stance)]) if probs is not None else 0.0
        judged = STANCES[int(probs.argmax())] if probs is not None else None
        kept = judged == cell.stance and p_req >= min_prob
        if kept and (ci not in best or p_req > best[ci][0]):
            best[ci] = (p_req, t)
        rows.append({
            "question_id": cell.question.id, "topic": cell.question.topic, "stance": cell.stance, "style": cell.style,
            "candidate": j, "text": t, "judged": judged, "label_mass": mass, "kept": kept,
            **{f"p_{s}": (float(probs[k]) if probs is not None else None) for k, s in enumerate(STANCES)},
        })
    answers = [BankAnswer(cells[ci].question.id, cells[ci].stance, cells[ci].style, t) for ci, (_, t) in sorted(best.items())]
    return ResponseBank(answers), rows


def lm_response_bank(
    cfg: PreferenceSetConfig, questions: list[Probe], seed: int, key: str, judges: Mapping[str, JudgeConfig], model: ModelConfig
) -> tuple[ResponseBank, list[dict[str, Any]]]:
    """Write, judge and filter answers for the set's questions; returns the bank (possibly without any
    question that has all three stances) and every candidate row. ``judges`` = ``eval.judges``; ``model``
    (the ``model`` section) sets how the hf generator and an hf judge load."""
    pool = select_questions(question_pool(cfg, questions, None, key), cfg.lm.questions, seed)
    cells = [Cell(q, s, y) for q in pool for s in STANCES for y in styles_needed(cfg)]
    log.info("%s: generating %d × %d answers with %s (%s)", key, len(cells), cfg.lm.candidates, cfg.lm.model, cfg.generator)
    texts = generate_hf(cells, cfg.lm, seed, model) if cfg.generator == "hf" else generate_openai(cells, cfg.lm, seed)
    jname = cfg.lm.judge
    judge = build_judge(jname, judges[jname], f"eval.judges.{jname}", model.dtype, model.device, model.trust_remote_code)
    bank, rows = filter_answers(cells, texts, judge, cfg.lm.min_judge_prob)
    log.info("%s: judge %s kept %d of %d answers %s; %d of %d questions have every stance", key, jname,
             sum(r["kept"] for r in rows), len(rows), kept_per_stance(rows), len(bank.question_ids()), len(pool))
    return bank, rows


def kept_per_stance(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many generated answers the judge kept, per requested stance."""
    return {s: sum(bool(r["kept"]) and r["stance"] == s for r in rows) for s in STANCES}
