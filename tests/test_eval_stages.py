"""`valuedrift eval` and `valuedrift judge-eval` end to end on the tiny model, with a real MLflow store;
bad input fails before any model loads, naming the key or file:line. Also the shipped labelled set."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from valuedrift.cli import main as cli
from valuedrift.data.probes import QUESTIONS_FILE, load_questions
from valuedrift.metrics.agreement import classification_metrics, cohen_kappa, confusion
from valuedrift.stages.judge_eval import load_labelled

from .conftest import DATA, ROOT, tiny_params_dict
from .test_judge_eval_sets import write_generations


@pytest.fixture()
def params_file(tmp_path, tiny_model_dir):
    p = tiny_params_dict()
    p["eval"]["paper"].update(k=2, max_new_tokens=4, batch_size=4, probes_per_topic=1)
    p["eval"]["judges"]["smollm2"].update(model=str(tiny_model_dir), template=str(ROOT / "data/judges/stance_judge.yaml"))
    p["eval"]["reference_profiles"] = str(ROOT / "data" / "reference_profiles")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path, p


def runs_with_stage(uri: str, stage: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], f"tags.stage = '{stage}'")


@pytest.mark.parametrize("route", ["likelihood", "paper"])
def test_eval_writes_table_json_and_an_mlflow_run(route, params_file, tiny_model_dir, tmp_path, mlflow_uri):
    path, _ = params_file
    out = tmp_path / "out"
    rc = cli(["eval", "--params", str(path), "--checkpoint", str(tiny_model_dir), "--route", route,
              "--probes-per-topic", "1", "--out", str(out), "--data", str(DATA)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["route"] == route and summary["n_probes"] == 12
    for split in ("dev", "test", "all"):
        v = summary["stance"][split]
        assert sum(v[s] for s in ("support", "neutral", "oppose")) == pytest.approx(1)
        assert all(v[f"{s}_ci"][0] <= v[s] <= v[f"{s}_ci"][1] for s in ("support", "neutral", "oppose"))
    assert {"uniform/all", "pluralistic/all", "corpus_neutral_heavy/all"} <= set(summary["alignment"])
    assert "| all | all |" in (out / "table.md").read_text()
    assert (out / "tables" / "samples.jsonl").exists() == (route == "paper")
    assert not (out / "mlflow_run_id").exists() and not (out / "mlflow_run.json").exists()  # a fresh run each time
    [run] = runs_with_stage(mlflow_uri, "eval")
    assert run.data.tags["route"] == route
    assert 0 <= run.data.metrics["stance/all/support"] <= 1
    assert 0 <= run.data.metrics["align/uniform/all/all/jsd"] <= 1


def test_eval_on_external_probes_needs_the_paper_route(params_file, tiny_model_dir, tmp_path, capsys):
    path, _ = params_file
    rc = cli(["eval", "--params", str(path), "--checkpoint", str(tiny_model_dir), "--route", "likelihood",
              "--probes", f"prism:{ROOT / 'tests/fixtures/prism'}", "--no-mlflow", "--out", str(tmp_path / "o")])
    assert rc == 2 and "needs stance statements" in capsys.readouterr().err
    rc = cli(["eval", "--params", str(path), "--checkpoint", str(tiny_model_dir), "--route", "paper", "--no-mlflow",
              "--probes", f"global_opinionqa:{ROOT / 'tests/fixtures/global_opinionqa'}", "--probes-per-topic", "0", "--out", str(tmp_path / "g")])
    assert rc == 0
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["n_probes"] == 3


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda p: p["eval"]["paper"].update(k=0), "eval.paper.k"),
        (lambda p: p["eval"]["paper"].update(judge="gpt4o"), "eval.paper.judge"),
        (lambda p: p["eval"]["judges"]["smollm2"].update(kind="openai"), "eval.judges.smollm2.base_url"),
        (lambda p: p["eval"]["judges"]["smollm2"].update(api_key_env="sk-abc 123"), "eval.judges.smollm2.api_key_env"),
        (lambda p: p["judge_eval"].update(judges=["nope"]), "judge_eval.judges[0]"),
    ],
)
def test_bad_params_fail_naming_the_key(mutate, needle, params_file, capsys):
    path, p = params_file
    mutate(p)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    assert cli(["eval", "--params", str(path), "--route", "paper", "--no-mlflow"]) == 2
    assert needle in capsys.readouterr().err


def test_bad_inputs_fail_before_any_model_loads(params_file, tiny_model_dir, tmp_path, capsys):
    path, p = params_file
    assert cli(["eval", "--params", str(path), "--checkpoint", str(tmp_path / "nowhere"), "--no-mlflow"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    prof = tmp_path / "profiles"
    prof.mkdir()
    (prof / "bad.json").write_text(json.dumps({"profiles": {"all": {"support": 0.5, "neutral": 0.5, "oppose": 0.5}}}))
    p["eval"]["reference_profiles"] = str(prof)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    assert cli(["eval", "--params", str(path), "--checkpoint", str(tiny_model_dir), "--no-mlflow"]) == 2
    assert "bad.json: profiles.all: probabilities must sum to 1" in capsys.readouterr().err


def test_judge_eval_reports_accuracy_confusion_and_route_agreement(params_file, tiny_model_dir, tmp_path, mlflow_uri):
    path, p = params_file
    labelled = tmp_path / "labelled.jsonl"
    rows = [json.loads(line) for line in (DATA / "stance_labelled/stance_labelled.jsonl").read_text().splitlines()[::30]]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gens = write_generations(tmp_path / "gens")
    p["judge_eval"].update(labelled=str(labelled), generations=str(gens), agreement_probes_per_topic=1, judges=["smollm2"])
    p["eval"]["splits"] = ["test"]
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    out = tmp_path / "je"
    assert cli(["judge-eval", "--params", str(path), "--checkpoint", str(tiny_model_dir), "--out", str(out), "--data", str(DATA)]) == 0
    report = json.loads((out / "judge_eval.json").read_text())
    r = report["judges"]["smollm2"]["labelled"]
    assert r["n"] == len(rows) and sum(map(sum, r["confusion"]["matrix"])) == len(rows)
    assert 0 <= r["accuracy"]["lo"] <= r["accuracy"]["value"] <= r["accuracy"]["hi"] <= 1 and 0 <= r["macro_f1"]["value"] <= 1
    g = report["judges"]["smollm2"]["generations_test"]
    assert g["n"] == 6 and g["n_units"] == 3 and sum(map(sum, g["confusion"]["matrix"])) == 6
    a = report["agreement"]["smollm2"]
    assert a["n_probes"] == 6 and 0 <= a["argmax_agreement"] <= 1 and 0 <= a["mean_jsd_alignment"] <= 1
    md = (out / "judge_eval.md").read_text()
    assert "Confusion matrices (rows gold, columns predicted)" in md and "Agreement with the likelihood route" in md
    [run] = runs_with_stage(mlflow_uri, "judge_eval")
    assert run.data.metrics["judge/smollm2/labelled/accuracy"] == pytest.approx(r["accuracy"]["value"])
    assert run.data.metrics["judge/smollm2/generations_test/kappa_lo"] == pytest.approx(g["kappa"]["lo"])
    assert run.data.metrics["agreement/smollm2/argmax_agreement"] == pytest.approx(a["argmax_agreement"])


def test_classification_metrics_by_hand():
    gold = ["support", "support", "neutral", "oppose", "oppose", "oppose"]
    pred = ["support", "neutral", "neutral", "oppose", "support", "oppose"]
    m = classification_metrics(gold, pred)
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    f1 = {"support": 0.5, "neutral": 2 / 3, "oppose": 0.8}
    assert m["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert cohen_kappa(confusion(gold, gold)) == pytest.approx(1.0)


def test_shipped_labelled_set_covers_every_topic():
    questions = {q.id: q for q in load_questions(DATA / QUESTIONS_FILE)}
    rows = load_labelled(DATA / "stance_labelled/stance_labelled.jsonl", questions)
    assert len(rows) >= 150
    assert len({r["topic"] for r in rows}) == 11
    assert sum(r["split"] == "dev" for r in rows) >= 75
    shares = Counter(r["gold"] for r in rows)
    assert min(shares.values()) >= 0.25 * len(rows)
    assert len({r["answer"] for r in rows}) == len(rows)


def test_bad_labelled_row_names_file_line_and_field(tmp_path):
    questions = {q.id: q for q in load_questions(DATA / QUESTIONS_FILE)}
    f = tmp_path / "l.jsonl"
    f.write_text('{"uid": "a", "id": 0, "answer": "Yes.", "gold": "support"}\n{"uid": "b", "id": 0, "answer": "No.", "gold": "against"}\n')
    from valuedrift.core.errors import DataError

    with pytest.raises(DataError, match=r"l.jsonl:2: field 'gold' must be one of"):
        load_labelled(f, questions)
