"""LM generator backend on the tiny random model: stance-conditioned answers are sampled (seeded), a real
hf judge labels every one of them, only answers judged as the requested stance are kept, and the pairs
composed from them never contain a test-split question."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from valuedrift.config.load import parse_params
from valuedrift.config.schema.data import LMGeneratorConfig, PreferenceSetConfig
from valuedrift.config.schema.evaluation import JudgeConfig
from valuedrift.config.schema.params import Params
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES
from valuedrift.data.leaks import find_leaks
from valuedrift.data.preferences import generate_pairs, question_pool
from valuedrift.data.probes import load_probe_bank
from valuedrift.generation import lm_answers as lm_generator
from valuedrift.generation.lm_answers import Cell, conditioned_prompt, filter_answers, generate_hf
from valuedrift.stages import preferences as stage
from valuedrift.stance.judges import Judgement, build_judge

from .conftest import DATA, ROOT, tiny_params_dict
from .test_openai_judge_server import KEY as SERVER_KEY
from .test_openai_judge_server import server  # noqa: F401 - the llama.cpp server fixture (skips without its venv)

SHORT_TEMPLATE = str(ROOT / "tests" / "fixtures" / "judges" / "short_judge.yaml")
KEY = "prepare_data.preference_sets.lm_set"


@pytest.fixture(scope="module")
def questions():
    return load_probe_bank(DATA, annotated_only=False)


@pytest.fixture(scope="module")
def tiny_params(tiny_model_dir) -> Params:
    params = Params()
    params.model.device = "cpu"
    params.eval.judges = {"tiny": JudgeConfig(kind="hf", model=str(tiny_model_dir), template=SHORT_TEMPLATE, batch_size=32)}
    return params


def lm_cfg(tiny_model_dir, **lm) -> PreferenceSetConfig:
    settings = {"model": str(tiny_model_dir), "questions": 2, "candidates": 2, "max_new_tokens": 8, "judge": "tiny",
                "batch_size": 16, **lm}
    return PreferenceSetConfig(target="oppose", gap=0.5, pairs=6, topics=["religion"], gap_styles=["brief"],
                               chosen_styles=["reasoned"], rejected_styles=["brief"], generator="hf",
                               lm=LMGeneratorConfig(**settings))


class HashJudge:
    """A deterministic stand-in for a judge (stance/judges.py ``Judge`` protocol): p_J is a fixed pseudo-random
    distribution per answer text, so each answer is confirmed with chance ~1/3. The tiny random model as
    judge puts nearly all its mass on one label whatever the answer, so it never keeps all three stances;
    this stand-in lets the compose path run. With 8 answers per (question, stance) and 3 questions, the
    chance that no question gets all three stances is about 0.1%."""

    name = "hash"

    def judge(self, items: Sequence[tuple[str, str]], progress: bool = False) -> Judgement:
        rows = []
        for _, answer in items:
            h = hashlib.sha256(answer.encode()).digest()
            w = np.array([1 + h[0], 1 + h[1], 1 + h[2]], dtype=np.float64) ** 2
            rows.append(w / w.sum())
        return Judgement(np.array(rows).reshape(-1, 3), np.ones(len(items)))


def test_conditioned_prompt_names_stance_style_and_claim(questions):
    q = next(p for p in questions if p.proposition)
    text = conditioned_prompt(q, "oppose", "brief")
    assert "AGAINST" in text and "one plain sentence" in text and q.proposition in text and text.endswith(q.question)


def test_generated_answers_are_judged_and_filtered_by_the_real_judge(tiny_model_dir, tiny_params, questions):
    cfg = lm_cfg(tiny_model_dir)
    pool = question_pool(cfg, questions, None, KEY)[:2]
    cells = [Cell(q, s, "brief") for q in pool for s in STANCES]
    texts = generate_hf(cells, cfg.lm, seed=5, model=tiny_params.model)
    assert [len(t) for t in texts] == [2] * len(cells)
    assert texts == generate_hf(cells, cfg.lm, seed=5, model=tiny_params.model)  # seeded: same answers again
    judge = build_judge("tiny", tiny_params.eval.judges["tiny"], "eval.judges.tiny", device="cpu")
    bank, rows = filter_answers(cells, texts, judge, min_prob=0.3)
    assert len(rows) == 2 * len(cells)
    scored = [r for r in rows if r["text"].strip()]
    assert scored, "the tiny model wrote only empty answers"
    # the judge saw the bare question (never the stance instruction): same verdict as a direct call
    q_text = {q.id: q.question for q in pool}
    direct = judge.judge([(q_text[r["question_id"]], r["text"]) for r in scored]).probs
    for r, p in zip(scored, direct, strict=True):
        assert [r[f"p_{s}"] for s in STANCES] == pytest.approx(list(p))
        assert r["judged"] == STANCES[int(np.argmax(p))]
        assert r["kept"] == (r["judged"] == r["stance"] and r[f"p_{r['stance']}"] >= 0.3)
    # the bank holds, per cell, the kept answer the judge found most on-stance, and nothing else
    assert bank.index, "the judge kept no answer: the checks below would hold vacuously"
    for (qid, stance), styles in bank.index.items():
        kept = [r for r in rows if r["question_id"] == qid and r["stance"] == stance and r["kept"]]
        assert styles["brief"] == max(kept, key=lambda r: r[f"p_{stance}"])["text"]
    assert sum(len(v) for v in bank.index.values()) == len({(r["question_id"], r["stance"]) for r in rows if r["kept"]})


def stage_params(tmp_path, tiny_model_dir, lm: dict) -> str:
    p = tiny_params_dict()
    p["model"]["device"] = "cpu"
    p["eval"]["judges"]["tiny"] = {"kind": "hf", "model": str(tiny_model_dir), "template": SHORT_TEMPLATE, "batch_size": 32}
    p["prepare_data"]["preference_sets"]["lm_set"] = {
        "target": "oppose", "gap": 0.5, "pairs": 8, "topics": ["religion"], "gap_styles": ["brief"],
        "chosen_styles": ["reasoned"], "rejected_styles": ["brief"], "generator": "hf",
        "lm": {"model": str(tiny_model_dir), "questions": 3, "candidates": 2, "max_new_tokens": 8, "judge": "tiny", **lm},
    }
    parse_params(p)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return str(path)


def test_stage_composes_lm_answers_without_leaks(tmp_path, tiny_model_dir, questions, monkeypatch):
    """Real tiny-model generation through the stage; the judge is the deterministic stand-in (see HashJudge)."""
    monkeypatch.setattr("valuedrift.generation.lm_answers.build_judge", lambda *a, **k: HashJudge())
    params = stage_params(tmp_path, tiny_model_dir, {"candidates": 4})
    out = tmp_path / "processed"
    stage.main(["--params", params, "--data", str(DATA), "--out", str(out), "--set", "lm_set", "--sft-run", str(tmp_path)])
    pref = out / "preferences"
    answers = [json.loads(line) for line in (pref / "lm_set.answers.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (pref / "lm_set.jsonl").read_text().splitlines()]
    assert len(answers) == 3 * 3 * 2 * 4  # questions × stances × styles (brief, reasoned) × candidates
    assert len(pairs) == 8 and find_leaks(pairs, questions) == []
    dev = {q.id for q in questions if q.split == "dev"}
    assert {p["question_id"] for p in pairs} <= dev & set(range(250, 275))  # religion's dev half only
    kept = {(a["question_id"], a["stance"], a["style"], a["text"]) for a in answers if a["kept"]}
    for p in pairs:  # every answer in a pair was written for, and judged as, its labelled stance
        for side in ("chosen", "rejected"):
            assert (p["question_id"], p[f"{side}_stance"], p[f"{side}_style"], p[side][0]["content"]) in kept
    meta = json.loads((pref / "lm_set.gap.json").read_text())
    assert meta["generator"] == "hf" and meta["gap"]["oppose"] == pytest.approx(0.5)


def test_stage_fails_naming_the_key_when_the_judge_keeps_nothing(tmp_path, tiny_model_dir, questions):
    """Real generation and the real tiny hf judge; p_J ≥ 1 is never reached, so nothing can be kept."""
    params = stage_params(tmp_path, tiny_model_dir, {"min_judge_prob": 1.0, "questions": 1, "candidates": 1})
    out = tmp_path / "processed"
    with pytest.raises(ConfigError) as e:
        stage.main(["--params", params, "--data", str(DATA), "--out", str(out), "--set", "lm_set", "--sft-run", str(tmp_path)])
    assert e.value.key == f"{KEY}.lm" and "kept answers in all three stances for no question" in str(e.value)
    answers = [json.loads(line) for line in (out / "preferences" / "lm_set.answers.jsonl").read_text().splitlines()]
    assert answers and not any(a["kept"] for a in answers)  # every candidate and its verdict is on disk
    assert not (out / "preferences" / "lm_set.jsonl").exists()


def test_lm_settings_are_checked_before_generation(tmp_path, tiny_model_dir):
    p = parse_params(yaml.safe_load(Path(stage_params(tmp_path, tiny_model_dir, {})).read_text()))
    cfg = p.prepare_data.preference_sets["lm_set"]
    cfg.lm.model = str(tmp_path / "missing" / "model")
    with pytest.raises(ConfigError) as e:
        lm_generator.check_lm_settings(cfg, f"{KEY}.lm", p.eval.judges)
    assert e.value.key == f"{KEY}.lm.model"
    cfg.lm.model = "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match="bundled name"):
        lm_generator.check_lm_settings(cfg, f"{KEY}.lm", p.eval.judges)


def test_compose_from_an_lm_bank_is_dev_only_for_every_target(tiny_model_dir, tiny_params, questions):
    cfg = lm_cfg(tiny_model_dir, candidates=4)
    pool = question_pool(cfg, questions, None, KEY)
    assert all(q.split == "dev" for q in pool)
    cells = [Cell(q, s, y) for q in pool[:3] for s in STANCES for y in ("brief", "reasoned")]
    texts = generate_hf(cells, cfg.lm, seed=1, model=tiny_params.model)
    bank, _ = filter_answers(cells, texts, HashJudge(), 0.0)
    assert bank.question_ids()
    for target in STANCES:
        pairs = generate_pairs(cfg, questions, bank, seed=2, target=target)
        assert find_leaks(pairs, questions) == [] and all(p["question_id"] in bank.question_ids() for p in pairs)
        assert sum(p["kind"] == "gap" for p in pairs) == 3


def test_unreachable_endpoint_fails_with_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    with pytest.raises(RuntimeError, match=f"{url} cannot be reached"):
        lm_generator.chat_completion(url, {"model": "m", "messages": []}, "sk-secret", timeout_s=2, retries=0)


@pytest.mark.integration
def test_openai_generator_against_a_real_server(server, tiny_model_dir, tiny_params, questions, monkeypatch):  # noqa: F811
    """llama-cpp-python's OpenAI-compatible server (the bundled SmolLM2 GGUF) writes the answers."""
    monkeypatch.setenv("VD_GEN_KEY", SERVER_KEY)
    cfg = lm_cfg(tiny_model_dir)
    cfg.generator = "openai"
    cfg.lm = LMGeneratorConfig(model="smollm2", base_url=server, api_key_env="VD_GEN_KEY", candidates=1, max_new_tokens=16,
                               judge="tiny")
    pool = question_pool(cfg, questions, None, KEY)[:1]
    cells = [Cell(q, s, "brief") for q in pool for s in STANCES]
    texts = lm_generator.generate_openai(cells, cfg.lm, seed=3)
    assert [len(t) for t in texts] == [1] * len(cells) and all(t[0].strip() for t in texts)
    assert texts == lm_generator.generate_openai(cells, cfg.lm, seed=3)  # the server honours the per-request seed
    bank, rows = filter_answers(cells, texts, HashJudge(), 0.0)
    assert len(rows) == len(cells) and all(r["kept"] == (r["judged"] == r["stance"]) for r in rows)
