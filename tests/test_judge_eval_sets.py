"""`valuedrift judge-eval` on its evaluation sets (held-out-topic real generations, their dev rows, the
hand-written labelled set) with a fake judge: no model loads. Bootstrap CIs, confusion matrices, baselines,
the labeller's inter-pass agreement, predictions.jsonl's ``set`` column, MLflow metric names, and bad
input (ConfigError / DataError, exit 2) before any judge is built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from valuedrift.cli import main as cli
from valuedrift.data.probes import QUESTIONS_FILE, load_questions
from valuedrift.stance.judges import Judgement

from .conftest import DATA, ROOT, tiny_params_dict

KEYWORD = {"yes": "support", "maybe": "neutral", "no": "oppose"}  # the fake judge's rule: first word of the answer


class KeywordJudge:
    """p_J = 0.8 on the stance named by the answer's first word (KEYWORD), 0.1 on the others; mass 0.5."""

    def __init__(self, name: str):
        self.name = name
        self.calls = 0

    def judge(self, items, progress=False):
        self.calls += 1
        stances = ("support", "neutral", "oppose")
        probs = np.array([[0.8 if s == KEYWORD.get(a.split()[0].lower().strip(".,"), "neutral") else 0.1 for s in stances]
                          for _, a in items])
        return Judgement(probs, np.full(len(items), 0.5))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# (split, answer's first word, gold, flag): 3 test questions × 2 answers, 2 dev questions × 2 answers
GENERATIONS = [
    ("test", "Yes", "support", None), ("test", "Yes", "support", None),
    ("test", "No", "oppose", None), ("test", "Maybe", "neutral", None),
    ("test", "No", "oppose", None), ("test", "Yes", "oppose", "off_topic"),  # the one miss, flagged
    ("dev", "Yes", "support", None), ("dev", "No", "support", None),
    ("dev", "Maybe", "neutral", "incoherent"), ("dev", "No", "oppose", None),
]


def write_generations(folder: Path, pass2: list[tuple[str, str, str | None]] | None = None) -> Path:
    """A labelled-generations folder in the loader's format: two answers (two checkpoints) per question."""
    questions = load_questions(DATA / QUESTIONS_FILE)
    by_split = {s: [q for q in questions if q.split == s] for s in ("dev", "test")}
    answers, key, labels = [], [], []
    for i, (split, word, gold, flag) in enumerate(GENERATIONS):
        q = by_split[split][[r[0] for r in GENERATIONS[:i]].count(split) // 2 * 7]  # a new question every 2 answers
        aid = f"g{i:03d}"
        answers.append({"aid": aid, "id": q.id, "question": q.question, "proposition": q.question, "answer": f"{word}, I think so."})
        key.append({"aid": aid, "checkpoint": f"runs/ckpt-{i % 2}", "probe_id": f"p{q.id}", "topic": q.topic, "split": split,
                    "sample": 0, "new_tokens": 5, "finished": True})
        labels.append({"aid": aid, "stance": gold, "flag": flag})
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "answers.jsonl", answers)
    write_jsonl(folder / "key.jsonl", key)
    write_jsonl(folder / "labels.jsonl", labels)
    if pass2 is not None:
        write_jsonl(folder / "labels_pass2.jsonl", [{"aid": a, "stance": s, "flag": f} for a, s, f in pass2])
    return folder


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """params.yaml (no route agreement, generations in tmp_path, a small labelled set) and a fake make_judge."""
    labelled = tmp_path / "labelled.jsonl"
    rows = [json.loads(line) for line in (DATA / "stance_labelled/stance_labelled.jsonl").read_text().splitlines()[::15]]
    write_jsonl(labelled, rows)
    p = tiny_params_dict()
    p["eval"]["judges"]["smollm2"]["template"] = str(ROOT / "data/judges/stance_judge.yaml")
    p["eval"]["judges"]["other"] = dict(p["eval"]["judges"]["smollm2"])
    p["eval"]["reference_profiles"] = str(ROOT / "data" / "reference_profiles")
    p["judge_eval"].update(labelled=str(labelled), generations=str(tmp_path / "gens"), judges=["smollm2", "other"],
                           agreement_probes_per_topic=0)
    built: dict[str, KeywordJudge] = {}

    def fake_make_judge(judges, model, name):
        built[name] = KeywordJudge(name)
        return built[name]

    monkeypatch.setattr("valuedrift.stages.judge_eval.make_judge", fake_make_judge)
    params = tmp_path / "params.yaml"

    def run(mutate=None, extra=()):
        if mutate:
            mutate(p)
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        return cli(["judge-eval", "--params", str(params), "--data", str(DATA), "--out", str(tmp_path / "je"), *extra])

    return run, tmp_path, built, rows


def test_judge_eval_reports_every_set_with_cis_baselines_and_inter_pass(setup, mlflow_uri):
    run, tmp, built, labelled_rows = setup
    # second pass over 4 answers: agrees on 3 (g005 relabelled) → raw agreement 0.75
    write_generations(tmp / "gens", pass2=[("g000", "support", None), ("g002", "oppose", None), ("g005", "neutral", None),
                                           ("g007", "support", None)])
    assert run() == 0
    assert all(j.calls == 2 for j in built.values())  # each pool judged once per judge
    report = json.loads((tmp / "je" / "judge_eval.json").read_text())
    assert list(report["sets"]) == ["generations_test", "generations_test_unflagged", "generations_dev", "generations_dev_unflagged",
                                    "labelled", "labelled_dev", "labelled_test"]
    sets = report["sets"]
    assert sets["generations_test"]["n"] == 6 and sets["generations_test"]["n_questions"] == 3
    assert sets["generations_test"]["resample"].startswith("question ids") and sets["labelled"]["resample"] == "answers"
    assert sets["generations_dev"]["description"] == "dev (training material of the classifier judge)"
    assert sets["generations_test_unflagged"]["n"] == 5 and sets["generations_dev_unflagged"]["n"] == 3
    assert sets["labelled"]["n"] == len(labelled_rows)
    assert report["bootstrap"] == {"n": 200, "ci": 0.95, "seed": tiny_params_dict()["seed"]}

    r = report["judges"]["smollm2"]
    # test split: 5 of 6 right (the flagged g005 is the miss); unflagged: 5 of 5
    assert r["generations_test"]["accuracy"]["value"] == pytest.approx(5 / 6)
    assert r["generations_test"]["confusion"]["matrix"] == [[2, 0, 0], [0, 1, 0], [1, 0, 2]]
    assert r["generations_test_unflagged"]["accuracy"]["value"] == 1.0
    assert r["generations_test"]["unit"] == "group" and r["generations_test"]["n_units"] == 3
    # dev: g007 ("No", gold support) is the miss → 3 of 4
    assert r["generations_dev"]["accuracy"]["value"] == pytest.approx(0.75)
    assert r["generations_test"]["mean_log_p_gold"]["value"] == pytest.approx((5 * np.log(0.8) + np.log(0.1)) / 6)
    assert r["generations_test"]["mean_label_mass"]["value"] == pytest.approx(0.5)
    for per_set in r.values():
        for k in ("accuracy", "macro_f1", "kappa", "mean_log_p_gold"):
            assert per_set[k]["lo"] <= per_set[k]["value"] <= per_set[k]["hi"], k
    assert r == report["judges"]["other"]  # same predictions, same resamples
    base = sets["generations_test"]["majority_baseline"]
    # gold on the test split: support 2, neutral 1, oppose 3 → always "oppose" is right 3 times of 6, κ = 0
    assert base["predict"] == "oppose" and base["accuracy"]["value"] == pytest.approx(0.5) and base["kappa"]["value"] == 0
    ip = report["inter_pass"]
    assert ip["n"] == 4 and ip["raw_agreement"]["value"] == pytest.approx(0.75) and ip["only_a"] == 6

    preds = [json.loads(line) for line in (tmp / "je" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * (len(GENERATIONS) + len(labelled_rows))
    assert {p["set"] for p in preds} == {"generations_test", "generations_dev", "labelled"}
    g5 = next(p for p in preds if p["item"] == "g005" and p["judge"] == "smollm2")
    assert g5 == {**g5, "set": "generations_test", "gold": "oppose", "pred": "support", "flag": "off_topic", "checkpoint": "runs/ckpt-1"}

    md = (tmp / "je" / "judge_eval.md").read_text()
    assert "## generations_test: held-out-topic real generations (test split) (6 answers, 3 questions)" in md
    assert "dev (training material of the classifier judge)" in md and "Labeller reliability" in md
    assert "| smollm2 | 0.833 [" in md and "| smollm2 | oppose | 1 | 0 | 2 |" in md

    from .test_eval_stages import runs_with_stage

    [mlrun] = runs_with_stage(mlflow_uri, "judge_eval")
    m = mlrun.data.metrics
    assert m["judge/smollm2/generations_test/macro_f1"] == pytest.approx(r["generations_test"]["macro_f1"]["value"])
    assert m["judge/smollm2/generations_test/macro_f1_lo"] == pytest.approx(r["generations_test"]["macro_f1"]["lo"])
    assert m["judge/other/labelled_dev/kappa_hi"] == pytest.approx(report["judges"]["other"]["labelled_dev"]["kappa"]["hi"])
    assert m["labeller/kappa"] == pytest.approx(ip["kappa"]["value"]) and m["labeller/n"] == 4
    assert "baseline/generations_test/accuracy" in m


def test_null_generations_skips_the_set_with_a_note(setup):
    run, tmp, _, _ = setup
    assert run(lambda p: p["judge_eval"].update(generations=None), ["--no-mlflow"]) == 0
    report = json.loads((tmp / "je" / "judge_eval.json").read_text())
    assert list(report["sets"]) == ["labelled", "labelled_dev", "labelled_test"]
    assert report["inter_pass"] is None and "generations is null" in report["generations"]["note"]
    assert "judge_eval.generations is null" in (tmp / "je" / "judge_eval.md").read_text()


def test_missing_generations_folder_fails_naming_the_key_before_any_judge(setup, capsys):
    run, tmp, built, _ = setup
    assert run(extra=["--no-mlflow"]) == 2  # tmp/gens was never written
    err = capsys.readouterr().err
    assert "params: judge_eval.generations:" in err and "does not exist" in err and "Traceback" not in err
    assert not built


def test_bad_second_pass_fails_naming_the_file_before_any_judge(setup, capsys):
    run, tmp, built, _ = setup
    write_generations(tmp / "gens", pass2=[("g000", "support", None), ("zzz", "oppose", None)])
    assert run(extra=["--no-mlflow"]) == 2
    assert "labels_pass2.jsonl: 1 aid(s) not labelled in labels.jsonl, e.g. zzz" in capsys.readouterr().err
    write_generations(tmp / "gens", pass2=[("g000", "against", None)])
    assert run(extra=["--no-mlflow"]) == 2
    assert "labels_pass2.jsonl:1: field 'stance' must be one of" in capsys.readouterr().err
    assert not built
