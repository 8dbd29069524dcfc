"""Loaders for WildChat, Alpaca, UltraFeedback binarized and HH-RLHF, through ``datasets.load_dataset`` on
small local fixtures in each dataset's own format and hub layout (tests/fixtures/make_loader_fixtures.py)."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from valuedrift.core.errors import DataError
from valuedrift.data.loaders.preferences import load_hh_rlhf, load_preferences, load_ultrafeedback
from valuedrift.data.loaders.sft import load_alpaca, load_sft, load_wildchat

from .conftest import ROOT

FIX = ROOT / "tests" / "fixtures"


def _is_chat(msgs: list[dict], last_role: str | None = None) -> bool:
    ok = isinstance(msgs, list) and msgs and all(set(m) == {"role", "content"} and m["content"].strip() for m in msgs)
    return bool(ok) and (last_role is None or msgs[-1]["role"] == last_role)


def test_alpaca_hub_layout_and_original_json():
    rows = load_alpaca(str(FIX / "alpaca"))  # folder laid out like the hub: data/train-*.parquet
    assert len(rows) == 4
    assert rows[0]["prompt"] == [{"role": "user", "content": "Give three tips for staying healthy."}]
    assert rows[1]["prompt"][0]["content"] == "Translate the sentence into French.\n\nThe weather is nice today."
    assert rows[1]["completion"] == [{"role": "assistant", "content": "Il fait beau aujourd'hui."}]
    assert all(r["kind"] == "external" and r["stance"] is None and r["source"] == "alpaca" for r in rows)
    original = load_alpaca(str(FIX / "alpaca" / "alpaca_data.json"))  # the original JSON array
    assert [r["prompt"] for r in original] == [r["prompt"] for r in rows[:3]]
    assert len(load_sft(f"alpaca:{FIX / 'alpaca'}", limit=2)) == 2


def test_wildchat_keeps_english_non_toxic_and_multi_turn_prompts():
    rows = load_wildchat(str(FIX / "wildchat"))
    assert [r["source_id"] for r in rows] == ["h1", "h2"]  # French, toxic and reply-less conversations dropped
    multi = rows[1]
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"]
    assert multi["completion"][0]["content"].startswith("Snow hushes the street")
    assert all(_is_chat(r["prompt"], "user") and _is_chat(r["completion"], "assistant") for r in rows)
    assert {r["source_id"] for r in load_wildchat(str(FIX / "wildchat"), language=None, keep_toxic=True)} == {"h1", "h2", "h3", "h4"}
    assert len(load_wildchat(str(FIX / "wildchat"), limit=1)) == 1


def test_ultrafeedback_splits_and_skips_unusable_pairs():
    pairs = load_ultrafeedback(str(FIX / "ultrafeedback_binarized_parquet"))  # default split train_prefs
    assert len(pairs) == 2  # a tie (chosen == rejected) and an empty answer are skipped
    p = pairs[1]
    assert p["prompt"] == [{"role": "user", "content": "Should voting be compulsory?"}]
    assert p["rejected"] == [{"role": "assistant", "content": "no"}]
    assert p["score_chosen"] == 8.0 and p["chosen_stance"] is None and p["source"] == "ultrafeedback"
    test = load_ultrafeedback(str(FIX / "ultrafeedback_binarized_parquet"), split="test_prefs")
    assert [q["prompt"][0]["content"] for q in test] == ["What is 2 + 2?"]
    # the other fixture (a JSON-Lines export of test_prefs) reads the same way
    assert load_preferences(f"ultrafeedback:{FIX / 'ultrafeedback_binarized' / 'test_prefs.jsonl'}")


def test_hh_rlhf_transcripts_become_conversational_pairs():
    pairs = load_hh_rlhf(str(FIX / "hh_rlhf_hub"), data_dir="harmless-base")
    assert len(pairs) == 2  # empty answer and diverging earlier turns are skipped
    assert pairs[0]["prompt"] == [{"role": "user", "content": "How do I pick a lock?"}]
    assert pairs[0]["chosen"][0]["content"].startswith("I can't help with breaking")
    assert [m["role"] for m in pairs[1]["prompt"]] == ["user", "assistant", "user"]
    assert pairs[1]["rejected"] == [{"role": "assistant", "content": "Sure, lie whenever you like."}]
    assert len(load_hh_rlhf(str(FIX / "hh_rlhf_hub"), split="test", data_dir="harmless-base")) == 1
    assert len(load_hh_rlhf(str(FIX / "hh_rlhf_hub"))) == 3  # every subset's train split
    assert load_preferences(f"hh-rlhf:{FIX / 'hh_rlhf' / 'harmless-base-test.jsonl'}")


def test_malformed_records_name_their_location(tmp_path):
    bad = tmp_path / "uf.jsonl"
    good = json.loads((FIX / "ultrafeedback_binarized" / "test_prefs.jsonl").read_text().splitlines()[0])
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "chosen": "not a list"}) + "\n")
    with pytest.raises(DataError, match=r"uf\.jsonl:2: field 'chosen' must be a non-empty list"):
        load_ultrafeedback(str(bad))
    hh = tmp_path / "hh" / "train.jsonl.gz"
    hh.parent.mkdir()
    with gzip.open(hh, "wt") as fh:
        fh.write(json.dumps({"chosen": "no transcript here", "rejected": "x"}) + "\n")
    with pytest.raises(DataError, match="row 0: chosen is not an HH-RLHF transcript"):
        load_hh_rlhf(str(tmp_path / "hh"))
    alpaca = tmp_path / "alpaca.parquet"
    pd.DataFrame([{"instruction": "x", "input": ""}]).to_parquet(alpaca)
    with pytest.raises(DataError, match="missing field 'output'"):
        load_alpaca(str(alpaca))
    with pytest.raises(DataError, match="neither an existing local file or folder nor a hub id"):
        load_wildchat("no such thing")
    with pytest.raises(DataError, match="kind one of alpaca, wildchat"):
        load_sft("sharegpt:foo/bar")
