"""Synthetic value-gap preference sets: exact gap (measured by the analyser), determinism, style variation,
the reinforce/reverse conditions read from an SFT trajectory, dev-only questions, and bad input that
fails before generation naming the key."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from valuedrift import cli
from valuedrift.config.load import parse_params
from valuedrift.config.schema.data import PreferenceSetConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES, STYLES
from valuedrift.data.bank import BankAnswer, ResponseBank, load_bank
from valuedrift.data.leaks import assert_no_leaks, find_leaks
from valuedrift.data.preferences import generate_pairs, question_pool, resolve_target, set_seed
from valuedrift.data.probes import load_probe_bank
from valuedrift.metrics.value_gap import gap_table, generator_labels, overall
from valuedrift.stages import preferences as stage

from .conftest import DATA, tiny_params_dict

SET = "value_gap"
KEY = f"prepare_data.preference_sets.{SET}"


@pytest.fixture(scope="module")
def sources():
    return load_probe_bank(DATA, annotated_only=False), load_bank(DATA)


def measured(pairs: list[dict]) -> pd.DataFrame:
    return gap_table(generator_labels(pairs), n_boot=200, ci=0.95, seed=0)


@pytest.mark.parametrize("target", STANCES)
@pytest.mark.parametrize("gap", [0.0, 0.1, 0.25, 0.33, 0.5, 0.67, 0.8, 1.0])
def test_measured_gap_matches_requested_gap(sources, target, gap):
    questions, bank = sources
    n = 60
    pairs = generate_pairs(PreferenceSetConfig(target=target, gap=gap, pairs=n), questions, bank, seed=7, target=target)
    table = measured(pairs)
    g = overall(table)
    assert len(pairs) == n
    assert abs(g[target] - gap) <= 1 / (2 * n) <= 0.05  # exact up to rounding round(g·n)/n
    if target != "neutral":  # rejected takes the opposite stance; neutral is untouched
        other = "oppose" if target == "support" else "support"
        assert g[other] == pytest.approx(-g[target]) and g["neutral"] == 0
    else:  # ō(neutral) alternates support / oppose
        assert abs(g["support"] - g["oppose"]) <= 1 / n and g["support"] + g["oppose"] == pytest.approx(-g["neutral"])
    # spread over topics: each topic's own gap is g up to its rounding
    for r in table[table.topic != "all"].itertuples():
        assert abs(getattr(r, f"gap_{target}") - gap) <= 1 / r.n + 1 / (2 * n), r
    # the CI is over pairs and contains the point estimate
    all_row = table[table.topic == "all"].iloc[0]
    assert all_row[f"gap_{target}_lo"] <= all_row[f"gap_{target}"] <= all_row[f"gap_{target}_hi"]


def test_pairs_are_deterministic_and_the_seed_matters(sources):
    questions, bank = sources
    cfg = PreferenceSetConfig(target="oppose", gap=0.5, pairs=40)
    a = generate_pairs(cfg, questions, bank, seed=3, target="oppose")
    assert a == generate_pairs(cfg, questions, bank, seed=3, target="oppose")
    assert a != generate_pairs(cfg, questions, bank, seed=4, target="oppose")
    # a set's seed depends on its own name only, so adding another set never changes it
    assert set_seed(0, "value_gap") == set_seed(0, "value_gap") != set_seed(0, "other") != set_seed(1, "value_gap")


def test_style_variation(sources):
    questions, bank = sources
    cfg = PreferenceSetConfig(target="support", gap=0.5, pairs=90, gap_styles=["reasoned", "conversational"],
                              chosen_styles=["reasoned", "conversational"], rejected_styles=["brief", "conversational"])
    pairs = generate_pairs(cfg, questions, bank, seed=0, target="support")
    gap_pairs = [p for p in pairs if p["kind"] == "gap"]
    style_pairs = [p for p in pairs if p["kind"] == "style"]
    assert len(gap_pairs) == 45 and len(style_pairs) == 45
    # gap pairs: one style shared by both answers, drawn from gap_styles; only the stance differs
    assert all(p["chosen_style"] == p["rejected_style"] for p in gap_pairs)
    assert {p["chosen_style"] for p in gap_pairs} == {"reasoned", "conversational"}
    assert all(p["chosen_stance"] == "support" and p["rejected_stance"] == "oppose" for p in gap_pairs)
    # style pairs: same stance, chosen/rejected style from their lists, never the same answer on both sides
    assert all(p["chosen_stance"] == p["rejected_stance"] for p in style_pairs)
    assert all(p["chosen_style"] in cfg.chosen_styles and p["rejected_style"] in cfg.rejected_styles for p in style_pairs)
    assert all(p["chosen"][0]["content"] != p["rejected"][0]["content"] for p in pairs)
    shared = Counter(p["chosen_stance"] for p in style_pairs)
    assert set(shared) == set(STANCES) and max(shared.values()) - min(shared.values()) <= 1
    # the answer texts are the bank's texts for the labelled (question, stance, style)
    for p in pairs[:20]:
        for side in ("chosen", "rejected"):
            assert p[side][0]["content"] == bank.index[(p["question_id"], p[f"{side}_stance"])][p[f"{side}_style"]]
    # many questions, each used once before any is used twice
    uses = Counter(p["question_id"] for p in pairs)
    assert max(uses.values()) - min(uses.values()) <= 1 and len(uses) == 90


@pytest.mark.parametrize("gap", [0.0, 0.5])
def test_style_stances_set_the_shared_stance_mix_of_style_pairs(sources, gap):
    questions, bank = sources
    shares = {"support": 0.125, "neutral": 0.8125, "oppose": 0.0625}
    cfg = PreferenceSetConfig(target="oppose", gap=gap, pairs=64, style_stances=shares)
    pairs = generate_pairs(cfg, questions, bank, seed=0, target="oppose")
    style_pairs = [p for p in pairs if p["kind"] == "style"]
    n_style = len(style_pairs)
    assert n_style == 64 - round(gap * 64)
    shared = Counter(p["chosen_stance"] for p in style_pairs)
    assert all(p["chosen_stance"] == p["rejected_stance"] for p in style_pairs)
    assert {s: shared[s] for s in STANCES} == {s: round(w * n_style) for s, w in shares.items()}  # exact here
    # the value gap is untouched: style pairs add nothing to any Δ_s
    assert overall(measured(pairs))["oppose"] == pytest.approx(round(gap * 64) / 64)
    # the same shares in another order, or a stance left out at share 0, give the same set
    reordered = {"oppose": 0.0625, "support": 0.125, "neutral": 0.8125}
    assert generate_pairs(PreferenceSetConfig(target="oppose", gap=gap, pairs=64, style_stances=reordered),
                          questions, bank, seed=0, target="oppose") == pairs
    only_neutral = generate_pairs(PreferenceSetConfig(target="oppose", gap=gap, pairs=64, style_stances={"neutral": 1.0}),
                                  questions, bank, seed=0, target="oppose")
    assert {p["chosen_stance"] for p in only_neutral if p["kind"] == "style"} == {"neutral"}


def test_default_style_stances_keep_the_balanced_cycle(sources):
    """``style_stances: null`` is the cycle over all three stances the sets were built with before the key existed."""
    questions, bank = sources
    pairs = generate_pairs(PreferenceSetConfig(target="neutral", gap=0.0, pairs=64), questions, bank, seed=0, target="neutral")
    assert Counter(p["chosen_stance"] for p in pairs) == {"support": 22, "neutral": 21, "oppose": 21}


def test_conditions_resolve_from_the_sft_profile():
    assert resolve_target("reinforce", {"support": 0.5, "neutral": 0.2, "oppose": 0.3}) == "support"
    assert resolve_target("reverse", {"support": 0.5, "neutral": 0.2, "oppose": 0.3}) == "oppose"
    assert resolve_target("reverse", {"support": 0.2, "neutral": 0.4, "oppose": 0.4}) == "support"
    assert resolve_target("reinforce", {"support": 0.3, "neutral": 0.5, "oppose": 0.2}) == "neutral"
    assert resolve_target("reverse", {"support": 0.3, "neutral": 0.5, "oppose": 0.2}) == "oppose"
    assert resolve_target("oppose", None) == "oppose"  # an explicit stance needs no profile
    with pytest.raises(ConfigError) as e:
        resolve_target("reverse", None, f"{KEY}.target")
    assert e.value.key == f"{KEY}.target"


def write_trajectory(run_dir: Path, profile: dict[str, float]) -> None:
    """A trajectory.json in train/tracing.py's format: last checkpoint with a phase ("full") vector."""
    row = {"split": "all", "topic": "all", "n": 10, **profile}
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpts = [{"step": 0, "phase": True, "trace": [], "full": [{**row, "support": 0.34, "neutral": 0.33, "oppose": 0.33}]},
             {"step": 8, "phase": True, "trace": [], "full": [row]}]
    (run_dir / "trajectory.json").write_text(json.dumps({"checkpoints": ckpts}))


def stage_params(tmp_path: Path, sets: dict) -> Path:
    p = tiny_params_dict()
    p["prepare_data"]["preference_sets"] = sets
    p["po"]["preference_sets"] = [next(iter(sets))]
    if "tune" in p:
        p["tune"]["preference_set"] = next(iter(sets))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def test_stage_reads_conditions_from_the_sft_trajectory_and_never_leaks(tmp_path, sources):
    questions, _ = sources
    write_trajectory(tmp_path / "sft", {"support": 0.2, "neutral": 0.7, "oppose": 0.1})  # neutral-favouring SFT
    sets = {name: {"target": name, "gap": 0.75, "pairs": 24} for name in ("reinforce", "reverse", "support", "neutral", "oppose")}
    sets["religion"] = {"target": "oppose", "gap": 1.0, "pairs": 30, "topics": ["religion"]}  # straddles dev/test
    params = stage_params(tmp_path, sets)
    out = tmp_path / "processed"
    stage.main(["--params", str(params), "--data", str(DATA), "--out", str(out), "--sft-run", str(tmp_path / "sft")])
    expected = {"reinforce": "neutral", "reverse": "oppose", "support": "support", "neutral": "neutral", "oppose": "oppose",
                "religion": "oppose"}
    dev_ids = {q.id for q in questions if q.split == "dev"}
    for name, target in expected.items():
        meta = json.loads((out / "preferences" / f"{name}.gap.json").read_text())
        assert meta["target"] == target and meta["condition"] == sets[name]["target"]
        assert meta["sft_profile"] == {"support": 0.2, "neutral": 0.7, "oppose": 0.1}
        assert meta["gap"][target] == pytest.approx(sets[name]["gap"], abs=0.05)
        rows = [json.loads(line) for line in (out / "preferences" / f"{name}.jsonl").read_text().splitlines()]
        assert find_leaks(rows, questions) == []
        assert {r["question_id"] for r in rows} <= dev_ids
        for ext in ("csv", "png"):
            assert (out / "preferences" / f"{name}.gap.{ext}").stat().st_size > 0
    assert (out / "preferences" / "religion.gap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    religion = [json.loads(line) for line in (out / "preferences" / "religion.jsonl").read_text().splitlines()]
    assert {r["question_id"] for r in religion} <= set(range(250, 275))  # religion's dev half only
    # --set regenerates one set only, identically (its seed depends on its own name)
    before = (out / "preferences" / "reverse.jsonl").read_bytes()
    (out / "preferences" / "reverse.jsonl").unlink()
    stage.main(["--params", str(params), "--data", str(DATA), "--out", str(out), "--sft-run", str(tmp_path / "sft"),
                "--set", "reverse"])
    assert (out / "preferences" / "reverse.jsonl").read_bytes() == before


def test_test_split_answers_in_the_bank_are_never_used(sources):
    questions, bank = sources
    test_qs = [q for q in questions if q.split == "test"][:20]
    extra = [BankAnswer(q.id, s, y, f"answer to held-out {q.id} {s} {y}") for q in test_qs for s in STANCES for y in STYLES]
    answers = [BankAnswer(qid, s, y, t) for (qid, s), styles in bank.index.items() for y, t in styles.items()]
    leaky_bank = ResponseBank(answers + extra)
    for target in STANCES:
        pairs = generate_pairs(PreferenceSetConfig(target=target, gap=0.5, pairs=300), questions, leaky_bank, 1, target)
        assert not {p["question_id"] for p in pairs} & {q.id for q in test_qs}
        assert_no_leaks(pairs, questions, "test")
    # and the guard itself fires on a test-split prompt
    bad = [{"prompt": [{"role": "user", "content": test_qs[0].question}]}]
    with pytest.raises(ValueError, match="1 test-split question"):
        assert_no_leaks(bad, questions, "injected")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"gap": 1.5}, f"{KEY}.gap"),
        ({"gap": -0.1}, f"{KEY}.gap"),
        ({"target": "agree"}, f"{KEY}.target"),
        ({"topics": ["abortion", "atlantis"]}, f"{KEY}.topics[1]"),
        ({"topics": ["work", "work"]}, f"{KEY}.topics[1]"),
        ({"gap_styles": []}, f"{KEY}.gap_styles"),
        ({"rejected_styles": ["rude"]}, f"{KEY}.rejected_styles[0]"),
        ({"generator": "gpt"}, f"{KEY}.generator"),
        ({"generator": "hf"}, f"{KEY}.lm.model"),
        ({"generator": "openai", "lm": {"model": "m"}}, f"{KEY}.lm.base_url"),
        ({"generator": "hf", "lm": {"model": "models/base", "judge": "nobody"}}, f"{KEY}.lm.judge"),
        ({"lm": {"candidates": 0}}, f"{KEY}.lm.candidates"),
        ({"lm": {"temperature": 0}}, f"{KEY}.lm.temperature"),
        ({"style_stances": {"support": 0.5, "neutral": 0.6}}, f"{KEY}.style_stances"),
        ({"style_stances": {"suport": 1.0}}, f"{KEY}.style_stances.suport"),
        ({"style_stances": {"support": 1.2, "oppose": -0.2}}, f"{KEY}.style_stances.oppose"),
    ],
)
def test_bad_preference_params_name_the_key(change, key):
    p = tiny_params_dict()
    p["prepare_data"]["preference_sets"][SET].update(change)
    with pytest.raises(ConfigError) as e:
        parse_params(p)
    assert e.value.key == key


@pytest.mark.parametrize(
    ("sets", "key", "match"),
    [
        ({SET: {"target": "oppose", "topics": ["family", "gender"]}}, f"{KEY}.topics[0]", "held-out"),
        ({SET: {"target": "oppose", "topics": ["abortion", "race"]}}, f"{KEY}.topics[1]", "held-out"),
        ({SET: {"target": "reverse"}}, f"{KEY}.target", "measured stance profile"),
    ],
)
def test_empty_selection_or_missing_profile_fails_before_generation(tmp_path, sets, key, match, capsys):
    params = stage_params(tmp_path, {"ok": {"target": "oppose", "pairs": 8}, **sets})
    out = tmp_path / "processed"
    argv = ["--params", str(params), "--data", str(DATA), "--out", str(out), "--sft-run", str(tmp_path / "no_sft")]
    with pytest.raises(ConfigError) as e:
        stage.main(argv)
    assert e.value.key == key and match in str(e.value)
    assert not out.exists(), "nothing may be generated when any set is invalid"
    assert cli.main(["preferences", *argv]) == 2  # the CLI reports it with the key, no traceback
    assert key in capsys.readouterr().err


def test_question_pool_is_dev_only(sources):
    questions, bank = sources
    pool = question_pool(PreferenceSetConfig(), questions, bank, KEY)
    assert pool and all(q.split == "dev" for q in pool)
    assert {q.topic for q in pool} == {"abortion", "climate", "elections", "economy", "work", "religion"}
