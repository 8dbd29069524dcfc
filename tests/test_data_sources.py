"""Training data from params (issue 16): ``source`` blocks of SFT corpora and preference sets, read by the
``prepare_data`` and ``preferences`` stages from small local fixtures in each dataset's own format
(tests/fixtures: WildChat parquet, Alpaca JSON, UltraFeedback-binarized parquet, HH-RLHF jsonl.gz, generic
JSON Lines), and the ``stance-mix`` command. Offline: hub ids are only checked, never fetched."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from valuedrift import cli
from valuedrift.config.load import parse_params
from valuedrift.config.schema.data import DataSource
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import read_records, write_jsonl
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import load_questions
from valuedrift.data.sources import check_source, load_source
from valuedrift.metrics.value_gap import message_text
from valuedrift.stages import preferences, prepare_data, stance_mix

from .conftest import DATA, ROOT, tiny_params_dict

FIX = ROOT / "tests" / "fixtures"
SHORT_TEMPLATE = str(FIX / "judges" / "short_judge.yaml")
SFT_KEYS = {"prompt", "completion", "kind", "stance", "topic", "style", "source_id", "source"}


def params_with(tmp: Path, corpora: dict | None = None, sets: dict | None = None, judge_model: Path | None = None) -> Path:
    """Tiny params with these corpora / preference sets added (the authored start corpus kept), as a file."""
    p = tiny_params_dict()
    p["model"]["device"] = "cpu"
    p["prepare_data"]["corpora"] = {"neutral_heavy": p["prepare_data"]["corpora"]["neutral_heavy"], **(corpora or {})}
    p["prepare_data"]["preference_sets"].update(sets or {})
    if judge_model is not None:
        p["eval"]["judges"]["tiny"] = {"kind": "hf", "model": str(judge_model), "template": SHORT_TEMPLATE, "batch_size": 16}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def mlflow_digest(df) -> str:
    import mlflow.data

    return mlflow.data.from_pandas(df, source="x", name="x").digest


CORPORA = {
    "wild": {"source": {"kind": "wildchat", "path": str(FIX / "wildchat")}},  # hub layout: data/train-*.parquet
    "alp": {"source": {"kind": "alpaca", "path": str(FIX / "alpaca" / "alpaca_data.json"), "sample": 2}},
    "js": {"source": {"kind": "jsonl", "path": str(FIX / "jsonl" / "sft.jsonl")}},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """prepare_data run once with a corpus of each source kind: (params file, output folder)."""
    tmp = tmp_path_factory.mktemp("sources")
    params = params_with(tmp, CORPORA)
    prepare_data.main(["--params", str(params), "--data", str(DATA), "--out", str(tmp / "processed")])
    return params, tmp / "processed"


def corpus(out: Path, name: str) -> list[dict]:
    return read_records(out / "sft" / f"{name}.jsonl", lambda obj, path, line: obj)


def test_each_sft_source_kind_through_prepare_data(prepared):
    _, out = prepared
    wild, alp, js = corpus(out, "wild"), corpus(out, "alp"), corpus(out, "js")
    assert [r["source_id"] for r in wild] == ["h1", "h2"]  # French, toxic and reply-less conversations dropped
    assert [m["role"] for m in wild[1]["prompt"]] == ["user", "assistant", "user"]
    texts = [r["instruction"] for r in json.loads((FIX / "alpaca" / "alpaca_data.json").read_text())]
    positions = [texts.index(r["prompt"][0]["content"].split("\n\n")[0]) for r in alp]
    assert len(positions) == 2 and positions == sorted(positions)  # a sample of 2 of the 3, in the source's order
    assert [r["source_id"] for r in js] == ["a1", "a2", "a3"] and [r["stance"] for r in js] == ["neutral", "support", None]
    assert js[1]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is homework useful?"}]
    assert [m["content"] for m in js[2]["prompt"]] == ["Name a prime number.", "7", "Another one?"]
    assert js[2]["completion"] == [{"role": "assistant", "content": "11"}]
    for r in wild + alp + js:  # the schema of an authored corpus row (+ source), as the sft stage reads it
        assert set(r) == SFT_KEYS and r["kind"] == "external"
        assert r["completion"][-1]["role"] == "assistant" and len(r["completion"]) == 1
        assert any(m["role"] == "user" for m in r["prompt"])


def test_summary_records_source_and_the_digest_the_sft_run_logs(prepared):
    from datasets import Dataset

    from valuedrift.train.sft import corpus_frame

    _, out = prepared
    summary = json.loads((out / "sft" / "summary.json").read_text())["corpora"]
    assert set(summary["neutral_heavy"]) == {"rows", "value_rows", "stance_mix"}  # authored corpora: as before
    wild = summary["wild"]
    assert wild["source"] == {"kind": "wildchat", "path": str(FIX / "wildchat"), "hub": False, "revision": None,
                              "split": "train", "data_dir": None, "read": 2, "sampled": None, "dropped_test_overlap": 0,
                              "rows": 2}
    assert wild["stance_mix"] is None and wild["labelled_rows"] == 0
    assert summary["alp"]["source"]["read"] == 3 and summary["alp"]["source"]["sampled"] == 2 and summary["alp"]["rows"] == 2
    assert summary["js"]["labelled_rows"] == 2
    assert summary["js"]["stance_mix"] == {"support": 0.5, "neutral": 0.5, "oppose": 0.0}
    for name in ("wild", "alp", "js"):
        rows = corpus(out, name)
        assert summary[name]["digest"] == mlflow_digest(corpus_frame(rows))  # train/sft.py logs this frame
        Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])  # as run_sft builds it


def test_sample_is_seeded_by_params_seed(tmp_path):
    src = DataSource(kind="jsonl", path=str(FIX / "jsonl" / "sft.jsonl"), sample=2)
    qs = load_questions(DATA / "v_prism" / "v_prism.jsonl")
    ids = {seed: [r["source_id"] for r in load_source(src, "sft", "k", seed, qs).rows] for seed in range(6)}
    assert ids[3] == [r["source_id"] for r in load_source(src, "sft", "k", 3, qs).rows]  # same seed, same rows
    assert len(set(map(tuple, ids.values()))) > 1  # the seed picks them
    assert all(len(v) == 2 and v == sorted(v) for v in ids.values())  # original order kept
    with pytest.raises(ConfigError, match=r"k\.sample: asks for 5 rows but the source yields only 3"):
        load_source(DataSource(kind="jsonl", path=src.path, sample=5), "sft", "k", 0, qs)


def test_rows_asking_a_held_out_question_are_dropped_with_a_warning(tmp_path, caplog):
    qs = load_questions(DATA / "v_prism" / "v_prism.jsonl")
    test_q = next(q.question for q in qs if q.split == "test")
    f = tmp_path / "leaky.jsonl"
    write_jsonl(f, [{"prompt": f"  {test_q.upper()} ", "completion": "An answer."},
                    {"prompt": "What is 2 + 2?", "completion": "4"}])
    with caplog.at_level(logging.WARNING):
        loaded = load_source(DataSource(kind="jsonl", path=str(f)), "sft", "prepare_data.corpora.x.source", 0, qs)
    assert [r["prompt"][0]["content"] for r in loaded.rows] == ["What is 2 + 2?"]
    assert loaded.info["dropped_test_overlap"] == 1
    assert "checked against the" in caplog.text and "prompt text only" in caplog.text and "1 row(s)" in caplog.text


@pytest.fixture(scope="module")
def judged_sets(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """The preferences stage run once on a set of each source kind, judged by the tiny model."""
    tmp = tmp_path_factory.mktemp("pref_sources")
    labelled = tmp / "labelled.jsonl"
    write_jsonl(labelled, [{"prompt": f"Q{i}?", "chosen": "Yes, it helps.", "rejected": "No, it harms.",
                            "chosen_stance": "support", "rejected_stance": "oppose"} for i in range(4)])
    sets = {
        "uf": {"generator": "source", "source": {"kind": "ultrafeedback", "path": str(FIX / "ultrafeedback_binarized_parquet"),
                                                 "judge": "tiny"}},
        "hh": {"generator": "source", "source": {"kind": "hh-rlhf", "path": str(FIX / "hh_rlhf_hub"),
                                                 "data_dir": "harmless-base", "judge": "tiny"}},
        "js": {"generator": "source", "source": {"kind": "jsonl", "path": str(FIX / "jsonl" / "pairs.jsonl"), "judge": "tiny"}},
        "lab": {"generator": "source", "source": {"kind": "jsonl", "path": str(labelled), "judge": "tiny"}},
    }
    params = params_with(tmp, sets=sets, judge_model=tiny_model_dir)
    argv = ["--params", str(params), "--data", str(DATA), "--out", str(tmp / "processed"), "--sft-run", str(tmp / "no_run")]
    for name in sets:
        argv += ["--set", name]
    preferences.main(argv)
    return params, tmp / "processed" / "preferences"


def test_each_preference_source_kind_through_the_preferences_stage(judged_sets):
    from valuedrift.config.load import load_params
    from valuedrift.stance.judges import build_judge
    from valuedrift.train.po import pairs_frame

    params_file, out = judged_sets
    judge = build_judge("tiny", load_params(params_file).eval.judges["tiny"], "eval.judges.tiny", device="cpu")
    expected_n = {"uf": 2, "hh": 2, "js": 2}  # ties and empty answers skipped (p3 of pairs.jsonl is a tie)
    for name, n in expected_n.items():
        pairs = read_records(out / f"{name}.jsonl", lambda obj, path, line: obj)
        meta = json.loads((out / f"{name}.gap.json").read_text())
        assert len(pairs) == n == meta["n_pairs"]
        for p in pairs:  # what train/po.py reads: prompt/chosen/rejected messages
            assert p["chosen"][-1]["role"] == p["rejected"][-1]["role"] == "assistant" and p["prompt"][-1]["role"] == "user"
        assert meta["labels"] == "judge:tiny" and meta["generator"] == "source" and meta["target"] is None
        assert meta["source"]["kind"] == {"uf": "ultrafeedback", "hh": "hh-rlhf", "js": "jsonl"}[name]
        assert meta["params"]["source"]["path"] == meta["source"]["path"]  # po logs params as pref.source.*
        assert meta["digest"] == mlflow_digest(pairs_frame(pairs))  # the po run's logged input digest
        qs = [message_text(p["prompt"], "user") for p in pairs]
        direct = {side: judge.judge([(q, message_text(p[side], "assistant")) for q, p in zip(qs, pairs, strict=True)]).probs.mean(0)
                  for side in ("chosen", "rejected")}
        for j, s in enumerate(STANCES):
            assert meta["gap"][s] == pytest.approx(direct["chosen"][j] - direct["rejected"][j], abs=1e-5)
        assert (out / f"{name}.gap.png").exists() and (out / f"{name}.gap.csv").exists()
    js = read_records(out / "js.jsonl", lambda obj, path, line: obj)
    assert [p.get("topic") for p in js] == [None, "energy"] and js[1]["source_id"] == "p2"


def test_a_labelled_jsonl_set_uses_its_own_labels(judged_sets):
    _, out = judged_sets
    meta = json.loads((out / "lab.gap.json").read_text())
    assert meta["labels"] == "generator"
    assert meta["gap"] == {"support": 1.0, "neutral": 0.0, "oppose": -1.0}


def test_malformed_rows_name_file_line_and_field(tmp_path, capsys):
    good = {"prompt": "Hi?", "completion": "Hello."}
    cases = [
        ({"prompt": "Hi?"}, "sft", r":2: missing field 'completion'"),
        ({"prompt": "Hi?", "completion": [{"role": "user", "content": "x"}]}, "sft",
         r":2: field 'completion' must end with an assistant message"),
        ({**good, "stance": "pro"}, "sft", r":2: field 'stance' must be one of support, neutral, oppose"),
        ({"messages": [{"role": "user"}]}, "sft", r":2: messages\[0\] must be a \{role, content\} message"),
        ({"prompt": "Q", "chosen": 3, "rejected": "b"}, "preferences", r":2: field 'chosen' must be a non-empty list"),
        ({"prompt": "Q", "chosen": "a"}, "preferences", r":2: missing field 'rejected'"),
    ]
    qs = load_questions(DATA / "v_prism" / "v_prism.jsonl")
    for i, (bad, use, msg) in enumerate(cases):
        f = tmp_path / f"bad{i}.jsonl"
        first = good if use == "sft" else {"prompt": "Q", "chosen": "a", "rejected": "b"}
        f.write_text(json.dumps(first) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=f"bad{i}\\.jsonl" + msg):
            load_source(DataSource(kind="jsonl", path=str(f)), use, "k", 0, qs)
    # through the CLI: a clean message, exit status 2
    params = params_with(tmp_path, {"js": {"source": {"kind": "jsonl", "path": str(tmp_path / "bad0.jsonl")}}})
    capsys.readouterr()
    rc = cli.main(["prepare-data", "--params", str(params), "--data", str(DATA), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'bad0.jsonl'}:2: missing field 'completion'" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "sft" / "neutral_heavy.jsonl").exists()  # nothing written before the error


def test_hub_revision_is_passed_and_an_unpinned_hub_id_warns(monkeypatch, caplog):
    import datasets

    calls = []

    def fake_load(path, **kw):
        calls.append((path, kw))
        return datasets.Dataset.from_list([{"instruction": "Say hi.", "input": "", "output": "Hi."}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    key = "prepare_data.corpora.alp.source"
    with caplog.at_level(logging.WARNING):
        loaded = load_source(DataSource(kind="alpaca", path="tatsu-lab/alpaca", revision="0123abc"), "sft", key, 0, [])
    assert calls == [("tatsu-lab/alpaca", {"name": None, "data_dir": None, "split": "train", "revision": "0123abc"})]
    assert loaded.info["hub"] is True and loaded.info["revision"] == "0123abc" and "not pinned" not in caplog.text
    with caplog.at_level(logging.WARNING):
        check_source(DataSource(kind="ultrafeedback", path="HuggingFaceH4/ultrafeedback_binarized"), "preferences",
                     "prepare_data.preference_sets.uf.source")
    assert "prepare_data.preference_sets.uf.source.revision: hub dataset 'HuggingFaceH4/ultrafeedback_binarized' is not pinned" in caplog.text


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["prepare_data"]["corpora"].update(w={"source": {"kind": "ultrafeedback", "path": "a/b"}}),
         "prepare_data.corpora.w.source.kind: 'ultrafeedback' is not a SFT corpus source"),
        (lambda p: p["prepare_data"]["corpora"].update(w={"source": {"kind": "alpaca", "path": "a/b", "revison": "x"}}),
         "prepare_data.corpora.w.source.revison: unknown key"),
        (lambda p: p["prepare_data"]["corpora"].update(w={"source": {"kind": "alpaca", "path": ""}}),
         "prepare_data.corpora.w.source.path: must name"),
        (lambda p: p["prepare_data"]["corpora"].update(w={"source": {"kind": "jsonl", "path": "a/b", "limit": 2, "sample": 3}}),
         "prepare_data.corpora.w.source.sample: samples 3 rows from at most limit = 2"),
        (lambda p: p["prepare_data"]["corpora"].update(w={"source": {"kind": "alpaca", "path": "a/b", "language": "French"}}),
         "prepare_data.corpora.w.source.language: only the wildchat kind"),
        (lambda p: p["prepare_data"]["corpora"].update(w={"source": {"kind": "alpaca", "path": "a/b", "judge": "nope"}}),
         "prepare_data.corpora.w.source.judge: 'nope' is not defined in eval.judges"),
        (lambda p: p["prepare_data"]["preference_sets"].update(s={"generator": "source"}),
         "prepare_data.preference_sets.s.source: generator 'source' needs a source block"),
        (lambda p: p["prepare_data"]["preference_sets"].update(s={"source": {"kind": "hh-rlhf", "path": "a/b"}}),
         "prepare_data.preference_sets.s.generator: a source block needs generator: source"),
        (lambda p: p["prepare_data"]["preference_sets"].update(s={"generator": "source", "source": {"kind": "alpaca", "path": "a/b"}}),
         "prepare_data.preference_sets.s.source.kind: 'alpaca' is not a preference-set source"),
        (lambda p: (p["prepare_data"]["preference_sets"].update(s={"generator": "source", "source": {"kind": "hh-rlhf", "path": "a/b"}}),
                    p["tune"].update(preference_set="s")),
         "tune.preference_set: 's' reads a dataset"),
    ],
)
def test_config_errors_name_the_key(edit, key):
    p = tiny_params_dict()
    edit(p)
    with pytest.raises(ConfigError, match="params: " + key.replace(".", r"\.").replace("(", r"\(")):
        parse_params(p)


def test_a_data_dir_for_a_kind_without_subsets_names_the_key():
    with pytest.raises(ConfigError, match=r"prepare_data\.corpora\.w\.source\.data_dir: only the hh-rlhf and jsonl"):
        check_source(DataSource(kind="alpaca", path="a/b", data_dir="x"), "sft", "prepare_data.corpora.w.source")


def test_stance_mix_of_an_authored_and_a_sourced_corpus(prepared, tiny_model_dir, tmp_path, mlflow_uri, monkeypatch):
    import mlflow

    from valuedrift.config.load import load_params
    from valuedrift.stance.judges import build_judge

    _, out = prepared
    p = yaml.safe_load(Path(prepared[0]).read_text())
    p["eval"]["judges"]["tiny"] = {"kind": "hf", "model": str(tiny_model_dir), "template": SHORT_TEMPLATE, "batch_size": 16}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    judge = build_judge("tiny", load_params(params).eval.judges["tiny"], "eval.judges.tiny", device="cpu")
    for name, limit in (("neutral_heavy", 12), ("js", 0)):
        stance_mix.main(["--params", str(params), "--processed", str(out), "--corpus", name, "--judge", "tiny",
                         "--limit", str(limit)])
        result = json.loads((out / "sft" / f"{name}.stance_mix.json").read_text())
        rows = corpus(out, name)[: limit or None]
        probs = judge.judge([(message_text(r["prompt"], "user"), message_text(r["completion"], "assistant")) for r in rows]).probs
        pred = [STANCES[j] for j in probs.argmax(1)]
        assert result["judge"] == "tiny" and result["all"]["n"] == len(rows)
        assert result["all"]["share"] == pytest.approx({s: pred.count(s) / len(rows) for s in STANCES})
        assert list(result["all"]["mean_p"].values()) == pytest.approx(list(probs.mean(0)), abs=1e-6)
        gold = [(r["stance"], q) for r, q in zip(rows, pred, strict=True) if r["stance"]]
        lab = result["labelled"]
        assert lab["n"] == len(gold) > 0
        assert lab["agreement"]["accuracy"] == pytest.approx(np.mean([g == q for g, q in gold]))
        run = mlflow.search_runs(experiment_names=["valuedrift"], filter_string=f"tags.corpus = '{name}'", output_format="list")
        assert len(run) == 1 and run[0].data.metrics["mix/all/support"] == pytest.approx(result["all"]["share"]["support"])
        assert lab["authored_share"] == pytest.approx({s: [g for g, _ in gold].count(s) / len(gold) for s in STANCES})
    assert set(json.loads((out / "sft" / "neutral_heavy.stance_mix.json").read_text())["by_kind"]) <= {"value", "general"}


def test_stance_mix_errors_name_the_flag(prepared, capsys):
    params, out = prepared
    capsys.readouterr()
    rc = cli.main(["stance-mix", "--params", str(params), "--processed", str(out), "--corpus", "nope"])
    assert rc == 2 and "--corpus: 'nope' is not in prepare_data.corpora" in capsys.readouterr().err
    rc = cli.main(["stance-mix", "--params", str(params), "--processed", str(out), "--corpus", "js", "--judge", "gpt9"])
    assert rc == 2 and "--judge: 'gpt9' is not defined in eval.judges" in capsys.readouterr().err


def trained_input(run_dir: Path, uri: str) -> tuple[list[int], object]:
    """(traced steps, the MLflow dataset input) of a finished training run."""
    import mlflow

    traj = json.loads((run_dir / "trajectory.json").read_text())
    run = mlflow.tracking.MlflowClient(uri).get_run((run_dir / "mlflow_run_id").read_text().strip())
    return [c["step"] for c in traj["checkpoints"]], run.inputs.dataset_inputs[0].dataset


def tiny_run_params(params_file: Path, model: Path):
    p = yaml.safe_load(params_file.read_text())
    p["model"]["name"] = str(model)
    p["eval"]["capability_rows"] = 0
    for section in ("sft", "po"):
        p[section].update(max_steps=2, eval_every=1, batch_size=2)
    return parse_params(p)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_each_sft_source_kind_trains_the_tiny_model(prepared, tiny_model_dir, tmp_path, mlflow_uri, monkeypatch, name):
    """prepare_data → sft end to end: the sourced corpus trains, is traced, and is the run's MLflow input."""
    from valuedrift.train.sft import run_sft

    monkeypatch.chdir(ROOT)
    params_file, processed = prepared
    run_dir = run_sft(tiny_run_params(params_file, tiny_model_dir), tiny_model_dir, processed, tmp_path / "runs", name,
                      start_eval=None)
    steps, dataset = trained_input(run_dir, mlflow_uri)
    assert steps == [0, 1, 2]
    summary = json.loads((processed / "sft" / "summary.json").read_text())["corpora"][name]
    assert dataset.digest == summary["digest"] and CORPORA[name]["source"]["path"] in dataset.source


@pytest.mark.parametrize("name", ["uf", "hh", "js"])
def test_each_preference_source_kind_trains_the_tiny_model_with_dpo(judged_sets, tiny_model_dir, tmp_path, mlflow_uri,
                                                                    monkeypatch, name):
    """preferences → po end to end: a dataset-sourced set trains with DPO from the tiny model."""
    from valuedrift.train.po import run_po

    monkeypatch.chdir(ROOT)
    params_file, out = judged_sets
    params = tiny_run_params(params_file, tiny_model_dir)
    run_dir = run_po(params, tiny_model_dir, out.parent, tmp_path / "runs", "dpo", name)
    steps, dataset = trained_input(run_dir, mlflow_uri)
    meta = json.loads((out / f"{name}.gap.json").read_text())
    assert steps == [0, 1, 2] and dataset.digest == meta["digest"] and meta["source"]["path"] in dataset.source
