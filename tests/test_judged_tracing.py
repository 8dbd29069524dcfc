"""The quick judged route traced during training (``eval.trace_judged``), the start model scored once for all
SFT runs (``trace_base``), and the drift, contrast and design-target maths on top — on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from valuedrift.config.load import parse_params
from valuedrift.core.io import iter_jsonl
from valuedrift.core.vocab import ALL, STANCES
from valuedrift.metrics.summary import contrast_rows
from valuedrift.reporting.findings import PhaseInfo, design_targets
from valuedrift.reporting.runs import compute
from valuedrift.stages import prepare_data
from valuedrift.stance.classifier_judge import train_classifier
from valuedrift.train.scaffold import trace_start_model
from valuedrift.train.sft import run_sft

from .conftest import ROOT, tiny_params_dict
from .test_classifier_judge import build_tiny_bert, quick_cfg, toy_rows


@pytest.fixture(scope="module")
def judged(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("judged")
    judge = tmp / "judge"
    train_classifier(toy_rows(12), str(build_tiny_bert(tmp / "bert")), quick_cfg(), seed=0, out_dir=judge, progress=False)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["eval"]["trace_judged"] = True
    p["eval"]["judges"]["classifier"]["model"] = str(judge)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        params = parse_params(p)
        processed = tmp / "processed"
        prepare_data.main(["--out", str(processed)])
        base = trace_start_model(params, tiny_model_dir, tmp / "runs" / "base")
        run = run_sft(params, tiny_model_dir, processed, tmp / "runs" / "sft", start_eval=base.path)
    return tmp, base.path, run, params, uri


def rows(path: Path) -> list[dict]:
    return [o for _, o in iter_jsonl(path)]


def test_the_judged_route_is_traced_at_every_checkpoint_with_its_answers(judged):
    _, _, run, params, uri = judged
    traj = json.loads((run / "judged" / "trajectory.json").read_text())
    assert [c["step"] for c in traj["checkpoints"]] == [0, 1, 2]
    assert traj["scorer"]["kind"] == "JudgedTraceScorer" and traj["scorer"]["judge"] == "classifier"
    final = rows(run / "judged" / "evals" / "step_000002.jsonl")
    assert len(final) >= 2 and len(final) == len({(r["split"], r["topic"]) for r in final})  # one probe per (split, topic)
    for r in final:
        assert len(r["samples"]) == params.eval.quick.k
        assert sum(r[s] for s in STANCES) == pytest.approx(1.0, abs=1e-6)
        assert r["support"] == pytest.approx(sum(x["support"] for x in r["samples"]) / len(r["samples"]))
    client = mlflow.tracking.MlflowClient(uri)
    run_id = (run / "mlflow_run_id").read_text().strip()
    assert sorted(m.step for m in client.get_metric_history(run_id, "judged/stance/all/support")) == [0, 1, 2]
    assert sorted(m.step for m in client.get_metric_history(run_id, "stance/all/support")) == [0, 1, 2]
    assert {a.path for a in client.list_artifacts(run_id, "judged/evals")} >= {"judged/evals/step_000000.jsonl"}
    m = client.get_run(run_id).data.metrics  # each route's scoring time, and their sum
    assert m["time/eval_seconds/judged"] > 0 and m["time/eval_seconds/likelihood"] > 0
    assert m["time/eval_seconds/judged"] + m["time/eval_seconds/likelihood"] == pytest.approx(m["time/eval_seconds"])


def test_sft_adopts_the_start_models_evaluation_on_both_routes(judged):
    _, base, run, _, uri = judged
    for sub in ("", "judged"):
        assert rows(Path(base, sub, "evals", "step_000000.jsonl")) == rows(Path(run, sub, "evals", "step_000000.jsonl"))
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("valuedrift")
    assert [r.info.run_name for r in client.search_runs([exp.experiment_id], "tags.stage = 'base'")] == ["base"]


def test_drift_is_computed_on_each_route(judged):
    tmp, _, _, params, _ = judged
    for route in (None, "judged"):
        per_run, frames = compute(tmp / "runs", 200, 0.95, 0, route)
        assert set(per_run.phase) == {"sft/neutral_heavy"}  # runs/base is not a phase
        assert per_run.magnitude.notna().all()
        assert list(frames["sft/neutral_heavy"].step) == [0, 1, 2]


def test_contrast_of_two_profiles_is_their_paired_difference():
    a = pd.DataFrame({"probe_id": range(6), "topic": ["t"] * 6, "split": ["dev"] * 6,
                      "support": [0.2] * 6, "neutral": [0.5] * 6, "oppose": [0.3] * 6})
    b = a.assign(support=0.5, neutral=0.2)
    out = pd.DataFrame(contrast_rows("a", a, "b", b, 200, 0.95, 0))
    cell = out[(out.split == ALL) & (out.topic == ALL)].set_index("stance")
    assert cell.at["support", "difference"] == pytest.approx(0.3) and cell.at["neutral", "difference"] == pytest.approx(-0.3)
    assert cell.at["oppose", "difference"] == pytest.approx(0.0)
    assert cell.at["support", "ci_lo"] == pytest.approx(0.3)  # no spread across probes: a point interval
    same = pd.DataFrame(contrast_rows("a", a, "a", a, 200, 0.95, 0))
    assert (same.difference.abs() < 1e-12).all()


def summary_row(phase: str, split: str, stance: str, m: float, lo: float, hi: float, t: float = 0.1, resolved: float = 1.0) -> dict:
    return {"phase": phase, "split": split, "topic": ALL, "stance": stance, "magnitude": m, "ci_lo": lo, "ci_hi": hi,
            "n_seeds": 1, "n_probes": 24, "drift_time": t, "time_resolved_share": resolved}


def test_design_targets_say_met_and_missed():
    recs = []
    for split in ("dev", "test", ALL):
        recs += [summary_row("sft/nh", split, "neutral", -0.2, -0.3, -0.1), summary_row("sft/nh", split, "support", 0.15, 0.1, 0.2),
                 summary_row("sft/nh", split, "oppose", 0.05, 0.0, 0.1),
                 summary_row("sft/sh", split, "support", 0.4, 0.3, 0.5), summary_row("sft/sh", split, "neutral", -0.3, -0.4, -0.2),
                 summary_row("sft/sh", split, "oppose", -0.1, -0.2, 0.0)]
        toward = 0.12 if split == "dev" else 0.08
        recs += [summary_row("po/dpo-vg", split, "oppose", toward, 0.05, 0.2), summary_row("po/dpo-vg", split, "support", -0.1, -0.2, 0.0),
                 summary_row("po/dpo-vg", split, "neutral", -0.02, -0.1, 0.05)]
        recs += [summary_row("po/dpo-so", split, s, m, m - 0.05, m + 0.05) for s, m in (("support", 0.02), ("neutral", -0.03), ("oppose", 0.01))]
    summary = pd.DataFrame(recs)
    infos = [PhaseInfo("sft/nh", "sft", "nh"), PhaseInfo("sft/sh", "sft", "sh"),
             PhaseInfo("po/dpo-vg", "po", "dpo-vg", "dpo", "vg", "reverse", "oppose", 1.0),
             PhaseInfo("po/dpo-so", "po", "dpo-so", "dpo", "so", "style", "neutral", 0.0)]
    contrasts = pd.DataFrame([{"a": "nh", "b": "sh", "split": ALL, "topic": topic, "stance": s, "difference": d, "ci_lo": d - 0.05,
                               "ci_hi": d + 0.05} for s, d in (("support", 0.25), ("neutral", -0.02), ("oppose", -0.1))
                              for topic in (ALL, "abortion")])  # per-topic rows are not targets
    targets = design_targets(summary, infos, {"nh": "neutral", "sh": "support"}, contrasts)
    got = {t.target: t.met for t in targets}
    assert len(got) == len(targets)  # one row per target
    assert got["SFT on nh raises its majority stance (neutral), CI above 0"] is False
    assert got["SFT on sh raises its majority stance (support), CI above 0"] is True
    assert got["final profiles of SFT on nh and sh differ on support (CI excludes 0)"] is True
    assert got["final profiles of SFT on nh and sh differ on neutral (CI excludes 0)"] is False
    assert got["DPO on vg moves oppose by ≥ 0.10 on dev topics, CI excluding 0"] is True
    assert got["DPO on vg moves oppose by ≥ 0.10 on test topics, CI excluding 0"] is False
    assert got["dpo: style-only largest absolute drift < its value-gap drift toward the target"] is True
    assert got["SFT on sh: drift time resolved (largest drift, support)"] is True
