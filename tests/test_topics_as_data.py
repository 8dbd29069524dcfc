"""Topics are data: a probe bank on subjects V-PRISM does not have (gun control, healthcare), written as
files only, runs through the eval stage and a traced SFT run with no code change."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from valuedrift import cli
from valuedrift.config.load import parse_params
from valuedrift.core.errors import DataError
from valuedrift.core.io import write_jsonl
from valuedrift.core.rundir import RunDir
from valuedrift.data.probes import load_probe_bank
from valuedrift.train.sft import run_sft

from .conftest import ROOT, tiny_params_dict

TOPICS = {"gun_control": "Gun Control Debates", "healthcare": "Healthcare Policy"}
QUESTIONS = {
    "gun_control": ["Should assault weapons be banned?", "Should background checks be universal?",
                    "Should teachers carry guns?", "Should concealed carry need a permit?"],
    "healthcare": ["Should healthcare be single-payer?", "Should vaccines be mandatory for school?",
                   "Should drug prices be capped?", "Should dental care be public?"],
}


def write_bank(root: Path) -> Path:
    """A probe bank in our layout: topics.jsonl, questions with dev/test splits, annotations per topic."""
    bank = root / "v_prism"
    questions, annotations = [], {t: [] for t in TOPICS}
    pid = 0
    for topic, qs in QUESTIONS.items():
        for i, q in enumerate(qs):
            split = "dev" if i < 2 else "test"
            questions.append({"id": pid, "topic": TOPICS[topic], "question": q, "split": split})
            subject = q.removeprefix("Should ").rstrip("?")
            annotations[topic].append({
                "id": pid, "proposition": f"{subject}.",
                "support": f"Yes, {subject}.", "neutral": "There are good arguments on both sides.",
                "oppose": f"No, that is a bad idea: {subject} should not happen."})
            pid += 1
    write_jsonl(bank / "topics.jsonl", [{"slug": s, "name": n} for s, n in TOPICS.items()])
    write_jsonl(bank / "v_prism.jsonl", questions)
    for topic, rows in annotations.items():
        write_jsonl(bank / "annotations" / f"{topic}.jsonl", rows)
    return root


@pytest.fixture()
def new_bank(tmp_path: Path) -> Path:
    return write_bank(tmp_path / "data")


def test_the_bank_defines_its_topics(new_bank):
    probes = load_probe_bank(new_bank)
    assert sorted({p.topic for p in probes}) == sorted(TOPICS)
    assert {p.split for p in probes} == {"dev", "test"}
    # a question on a topic the bank does not list is an error naming file:line
    with (new_bank / "v_prism" / "v_prism.jsonl").open("a") as fh:
        fh.write(json.dumps({"id": 99, "topic": "Astrology", "question": "Q?", "split": "dev"}) + "\n")
    with pytest.raises(DataError, match=r"v_prism.jsonl:9: unknown topic 'Astrology'"):
        load_probe_bank(new_bank)


def test_eval_and_a_traced_sft_run_on_made_up_topics(new_bank, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["eval"].update(capability_rows=0, trace_probes_per_topic=1, phase_probes_per_topic=0)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))

    out = tmp_path / "eval"
    argv = ["eval", "--params", str(params_file), "--checkpoint", str(tiny_model_dir), "--data", str(new_bank),
            "--out", str(out), "--no-mlflow"]
    assert cli.main(argv) == 0
    vectors = pd.read_csv(out / "vectors.csv")
    assert set(vectors.topic) == {*TOPICS, "all"}
    assert set(vectors.split) == {"dev", "test", "all"}

    params = parse_params(p)
    corpus = params.po.start_from
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": "It depends."}],
             "kind": "value", "stance": "neutral"} for q in ("Tell me about tea.", "What is rain?", "Name a colour.")] * 2
    write_jsonl(tmp_path / "processed" / "sft" / f"{corpus}.jsonl", rows)
    run_dir = run_sft(params, tiny_model_dir, tmp_path / "processed", tmp_path / "runs" / "sft", corpus, data_dir=new_bank)
    records = RunDir(run_dir).checkpoint_records()
    assert [c["step"] for c in records] == [0, 1, 2]
    assert {r["topic"] for r in records[-1]["full"]} == {*TOPICS, "all"}
    assert {r["topic"] for r in records[1]["trace"]} == {*TOPICS, "all"}
