"""Loaders for V-PRISM/PRISM, OpinionQA and GlobalOpinionQA, run through `datasets.load_dataset` on small
local fixtures in each dataset's own format (tests/fixtures/<name>/); bad records name file:line and field."""

from __future__ import annotations

import json
import shutil

import pytest

from valuedrift.core.errors import DataError
from valuedrift.data.loaders.probes import LOADERS, load_probes, parse_selections

from .conftest import ROOT

FIX = ROOT / "tests" / "fixtures"


def test_vprism_original_json_layout_and_our_jsonl():
    probes = load_probes(f"v_prism:{FIX / 'v_prism' / 'value_drifts.json'}")
    assert [(p.id, p.topic, p.split) for p in probes] == [(0, "abortion", "dev"), (50, "climate", "dev"), (350, "death_penalty", "test")]
    assert len(load_probes(f"v_prism:{ROOT / 'data' / 'v_prism'}")) == 550


def test_prism_keeps_value_and_controversy_guided_opening_prompts():
    probes = load_probes(f"prism:{FIX / 'prism'}")
    assert [p.question for p in probes] == [
        "Should rich countries open their borders to more refugees?",
        "How important is it to stay close to your family as an adult?",
        "Is it ever right to break the law to protest climate inaction?",
    ]
    assert {p.topic for p in probes} == {"controversy_guided", "values_guided"}
    assert all(p.split == "test" and not p.annotated for p in probes)
    assert len(LOADERS["prism"](str(FIX / "prism" / "conversations.jsonl"), types=("unguided",))) == 1


def test_opinionqa_reads_every_survey_info_csv():
    probes = load_probes(f"opinionqa:{FIX / 'opinionqa'}")
    assert [p.topic for p in probes] == ["american_trends_panel_w26"] * 2 + ["american_trends_panel_w92"]
    assert probes[1].question.startswith("Thinking about gun owners") and "\n" in probes[1].question  # multi-line CSV field


def test_global_opinionqa_parses_options_and_country_selections():
    probes = load_probes(f"global_opinionqa:{FIX / 'global_opinionqa'}")
    assert [p.topic for p in probes] == ["gas", "wvs", "wvs"]
    sel = parse_selections("defaultdict(<class 'list'>, {'Belgium': [0.5, 0.5]})", ("f", 1), 2)
    assert sel == {"Belgium": [0.5, 0.5]}


def test_bad_prism_record_names_file_line_and_field(tmp_path):
    lines = (FIX / "prism" / "conversations.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["opening_prompt"]
    f = tmp_path / "conversations.jsonl"
    f.write_text(lines[0] + "\n\n" + json.dumps(broken) + "\n")
    with pytest.raises(DataError, match=r"conversations.jsonl:3: missing field 'opening_prompt'"):
        load_probes(f"prism:{f}")
    f.write_text(lines[0] + '\n{"conversation_id": "c9", oops\n')
    with pytest.raises(DataError, match=r"conversations.jsonl:2: invalid JSON"):
        load_probes(f"prism:{f}")


def test_bad_csv_records_name_file_line_and_field(tmp_path):
    src = FIX / "opinionqa" / "human_resp" / "American_Trends_Panel_W26" / "info.csv"
    f = tmp_path / "info.csv"
    shutil.copy(src, f)
    with f.open("a") as fh:  # records 1-2 span lines 2-4 (a quoted newline); this one is line 5
        fh.write('2,K_W26,x,"Is it?","[not a list","{}","[]"\n')
    with pytest.raises(DataError, match=r"info.csv:5: field 'references' is not a Python list literal"):
        load_probes(f"opinionqa:{f}")
    g = tmp_path / "global_opinions.csv"
    g.write_text('question,selections,options,source\n"Q?","defaultdict(<class \'list\'>, {\'X\': [1.0]})","[\'a\', \'b\']",WVS\n')
    with pytest.raises(DataError, match=r"global_opinions.csv:2: field 'selections': 'X' has 1 shares for 2 options"):
        load_probes(f"global_opinionqa:{g}")


def test_unknown_sources_are_rejected():
    with pytest.raises(ValueError, match="kind one of"):
        load_probes("wvs:somewhere")
    with pytest.raises(DataError, match="neither an existing local path nor a hub id"):
        load_probes("prism:no such path")
