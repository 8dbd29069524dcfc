"""`valuedrift gap-analysis` on a synthetic set (generator labels, or a judge's) and on UltraFeedback-binarized
and HH-RLHF files in their own formats (labels from the tiny model as hf judge, checked against direct
judge calls)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from valuedrift import cli
from valuedrift.config.schema.data import PreferenceSetConfig
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import write_jsonl
from valuedrift.core.vocab import STANCES
from valuedrift.data.bank import load_bank
from valuedrift.data.preferences import generate_pairs, value_gap
from valuedrift.data.probes import load_probe_bank
from valuedrift.metrics.value_gap import message_text
from valuedrift.stages import gap_analysis
from valuedrift.stance.judges import build_judge

from .conftest import DATA, ROOT, tiny_params_dict

FIXTURES = ROOT / "tests" / "fixtures"
UF = FIXTURES / "ultrafeedback_binarized" / "test_prefs.jsonl"
HH = FIXTURES / "hh_rlhf" / "harmless-base-test.jsonl"
SHORT_TEMPLATE = str(FIXTURES / "judges" / "short_judge.yaml")


@pytest.fixture(scope="module")
def params_file(tmp_path_factory, tiny_model_dir):
    p = tiny_params_dict()
    p["model"]["device"] = "cpu"
    p["eval"]["judges"]["tiny"] = {"kind": "hf", "model": str(tiny_model_dir), "template": SHORT_TEMPLATE, "batch_size": 16}
    p["eval"]["paper"]["judge"] = "tiny"
    path = tmp_path_factory.mktemp("gap") / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_judge(params_file):
    from valuedrift.config.load import load_params

    return build_judge("tiny", load_params(params_file).eval.judges["tiny"], "eval.judges.tiny", device="cpu")


def read_gap(prefix) -> tuple[dict, pd.DataFrame]:
    meta = json.loads(prefix.with_name(prefix.name + ".gap.json").read_text())
    return meta, pd.read_csv(prefix.with_name(prefix.name + ".gap.csv"))


def test_synthetic_set_with_generator_labels(tmp_path, params_file):
    questions, bank = load_probe_bank(DATA, annotated_only=False), load_bank(DATA)
    pairs = generate_pairs(PreferenceSetConfig(target="support", gap=0.4, pairs=50), questions, bank, 0, "support")
    write_jsonl(tmp_path / "set.jsonl", pairs)
    prefix = tmp_path / "out" / "set"
    gap_analysis.main([str(tmp_path / "set.jsonl"), "--out", str(prefix), "--params", str(params_file)])
    meta, table = read_gap(prefix)
    assert meta["format"] == "synthetic" and meta["labels"] == "generator" and meta["n_pairs"] == 50
    assert meta["gap"] == pytest.approx(value_gap(pairs)) and meta["gap"]["support"] == pytest.approx(0.4, abs=0.05)
    assert list(table.topic)[-1] == "all" and set(table.topic[:-1]) == {p["topic"] for p in pairs}
    for r in table.itertuples():
        for s in STANCES:
            assert getattr(r, f"gap_{s}") == pytest.approx(getattr(r, f"chosen_{s}") - getattr(r, f"rejected_{s}"), abs=1e-5)
    assert prefix.with_name("set.gap.png").read_bytes()[:4] == b"\x89PNG"


def judged_means(judge, pairs: list[dict]) -> dict[str, np.ndarray]:
    """Direct judge calls: mean p_J over the pairs for chosen and rejected."""
    qs = [message_text(p["prompt"], "user") for p in pairs]
    return {side: judge.judge([(q, message_text(p[side], "assistant")) for q, p in zip(qs, pairs, strict=True)]).probs.mean(axis=0)
            for side in ("chosen", "rejected")}


@pytest.mark.parametrize(("source", "fmt", "n"), [(UF, "ultrafeedback", 6), (HH, "hh-rlhf", 4)])
def test_real_formats_are_labelled_by_the_judge(tmp_path, params_file, tiny_judge, source, fmt, n):
    prefix = tmp_path / fmt
    gap_analysis.main([str(source), "--out", str(prefix), "--params", str(params_file)])  # format auto-detected
    meta, table = read_gap(prefix)
    assert meta["format"] == fmt and meta["labels"] == "judge:tiny" and meta["n_pairs"] == n
    assert list(table.topic) == ["all"]
    expected = judged_means(tiny_judge, gap_analysis.load_pairs(str(source), fmt))
    row = table.iloc[0]
    for side in ("chosen", "rejected"):
        assert [row[f"{side}_{s}"] for s in STANCES] == pytest.approx(list(expected[side]), abs=1e-5)
        assert sum(row[f"{side}_{s}"] for s in STANCES) == pytest.approx(1.0, abs=1e-5)


def test_hh_transcripts_split_into_question_and_answers():
    pairs = gap_analysis.load_pairs(str(HH), "hh-rlhf")
    second = pairs[1]
    assert [m["role"] for m in second["prompt"]] == ["user", "assistant", "user"]
    assert message_text(second["prompt"], "user") == "Should the voting age be lowered to sixteen?"
    assert second["chosen"][0]["content"].startswith("There are reasonable views")
    assert second["rejected"][0]["content"].startswith("Yes, obviously")
    uf = gap_analysis.load_pairs(str(UF), "ultrafeedback", limit=2)
    assert len(uf) == 2 and uf[0]["rejected"] == [{"role": "assistant", "content": "Cars are vehicles with four wheels."}]


def test_synthetic_set_relabelled_by_a_judge(tmp_path, params_file, tiny_judge):
    questions, bank = load_probe_bank(DATA, annotated_only=False), load_bank(DATA)
    pairs = generate_pairs(PreferenceSetConfig(target="oppose", gap=1.0, pairs=6), questions, bank, 0, "oppose")
    write_jsonl(tmp_path / "set.jsonl", pairs)
    prefix = tmp_path / "judged"
    gap_analysis.main([str(tmp_path / "set.jsonl"), "--judge", "tiny", "--out", str(prefix), "--params", str(params_file)])
    meta, table = read_gap(prefix)
    assert meta["labels"] == "judge:tiny"
    expected = judged_means(tiny_judge, pairs)
    all_row = table[table.topic == "all"].iloc[0]
    assert [all_row[f"chosen_{s}"] for s in STANCES] == pytest.approx(list(expected["chosen"]), abs=1e-5)


def test_bad_input_names_the_file_line_or_option(tmp_path, params_file, capsys):
    bad = tmp_path / "hh.jsonl"
    bad.write_text(json.dumps({"chosen": "\n\nHuman: Q?\n\nAssistant: A.", "rejected": "no transcript here"}) + "\n")
    with pytest.raises(DataError, match=r"hh.jsonl:1: rejected is not an HH-RLHF transcript"):
        gap_analysis.load_pairs(str(bad), "hh-rlhf")
    with pytest.raises(ConfigError) as e:
        gap_analysis.main([str(UF), "--judge", "nobody", "--params", str(params_file), "--out", str(tmp_path / "x")])
    assert e.value.key == "--judge"
    assert cli.main(["gap-analysis", str(bad), "--format", "hh-rlhf", "--params", str(params_file),
                     "--out", str(tmp_path / "y")]) == 2
    assert "hh.jsonl:1" in capsys.readouterr().err
