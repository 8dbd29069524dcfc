"""Drift attribution (valuedrift.attribution, `valuedrift attribute`) on the tiny random model: the readout is
the instrument's q, the losses are tokenised as TRL trains them, TracIn-CP ranks what it should, and the
command writes its table, top-k, figures and MLflow logs."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from valuedrift import cli
from valuedrift.attribution.losses import DPOLoss, SFTLoss, completion_requests
from valuedrift.attribution.readout import ReadoutSpec, readout
from valuedrift.attribution.subset import CountSketch, flat_grad, select_subset
from valuedrift.attribution.tracin import checkpoint_weights
from valuedrift.config.load import parse_params
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.models import load_model, load_tokenizer
from valuedrift.stance.likelihood import LikelihoodScorer
from valuedrift.train.sft import run_sft

from .conftest import DATA, ROOT, fresh_mlflow_uri, tiny_params_dict

DUPLICATES = 12  # copies of the repeated row


@pytest.fixture(scope="module")
def probes():
    return select_probes(load_probe_bank(DATA), 1, ["dev", "test"], 0)


def test_readout_is_the_scorers_q_and_its_gradient_is_right(tiny_model_dir, probes, one_thread):
    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    rows = LikelihoodScorer(tok, 0.7, 16).score(model, probes)
    params = [p for _, p in select_subset(model, 1)]
    r = readout(model, tok, probes, ReadoutSpec(temperature=0.7, batch_size=7), params)
    want = np.array([[row[s] for s in STANCES] for row in rows])
    assert np.abs(r.q - want).max() < 1e-5
    for j, (split, s) in enumerate(r.names):
        assert r.values[j] == pytest.approx(want[[p.split == split for p in probes], STANCES.index(s)].mean(), abs=1e-6)
    # directional derivative along ∇R_0: (R(θ + εu) − R(θ − εu)) / 2ε = ⟨∇R_0, u⟩, u = ∇R_0 / ‖∇R_0‖
    g = r.grads[0]
    u, eps = g / g.norm(), 1e-2
    sizes = [p.numel() for p in params]

    def shifted(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, torch.split(u, sizes), strict=True):
                p.add_(sign * eps * d.reshape(p.shape))
        value = readout(model, tok, probes, ReadoutSpec(temperature=0.7), params).values[0]
        with torch.no_grad():
            for p, d in zip(params, torch.split(u, sizes), strict=True):
                p.sub_(sign * eps * d.reshape(p.shape))
        return value

    assert (shifted(1) - shifted(-1)) / (2 * eps) == pytest.approx(float(g.norm()), rel=2e-2)
    # only the last block and the final norm carry gradients
    names = [n for n, _ in select_subset(model, 1)]
    assert names and all(".layers.1." in n or n.endswith("model.norm.weight") for n in names)


def test_losses_are_tokenised_as_trl_trains(tiny_model_dir, probes, tmp_path, one_thread):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    rows = sft_corpus(probes)[DUPLICATES - 1 :][:6]  # rows 0 and 1 share a prompt
    args = SFTConfig(output_dir=str(tmp_path), max_length=40, report_to=[], use_cpu=True)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]))
    ours = SFTLoss(tok, rows, 40).requests
    kept = [r for r in ours if r is not None]  # TRL drops rows whose prompt fills max_length; they carry no loss
    assert kept and len(kept) < len(ours)
    for mine, theirs in zip(kept, trainer.train_dataset, strict=True):
        assert list(mine.context + mine.continuation) == theirs["input_ids"]
        assert theirs["labels"][: len(mine.context)] == [-100] * len(mine.context)
        assert theirs["labels"][len(mine.context) :] == list(mine.continuation)
    # a pair: the completion starts after the prompt both sides share
    pair = completion_requests(tok, rows[0]["prompt"], [rows[0]["completion"], rows[1]["completion"]], 200)
    assert pair[0].context == pair[1].context == SFTLoss(tok, rows, 200).requests[0].context
    # at the reference itself the DPO loss is log 2
    dpo = DPOLoss(tok, [{"prompt": rows[0]["prompt"], "chosen": rows[0]["completion"], "rejected": rows[1]["completion"]}], 200, 0.1)
    dpo.reference(model)
    assert float(dpo(model, 0)) == pytest.approx(np.log(2), abs=1e-6)
    # the shared-prefix cache changes nothing but the cost, gradients included
    params = [p for _, p in select_subset(model, 1)]
    loss = SFTLoss(tok, rows, 200)
    plain = flat_grad(loss(model, 2), params)
    loss.prepare(model)
    assert loss.prefix is not None and loss.prefix.length > 0
    torch.testing.assert_close(flat_grad(loss(model, 2), params, retain_graph=True), plain, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_one_backward_gives_every_examples_gradient(tiny_model_dir, probes, kind, one_thread, caplog):
    """PerExampleGrads on a padded batch (rows of different lengths, two rows per DPO pair) = one backward
    per example, for the Linear layers and the norms of the subset."""
    from valuedrift.attribution.tracin import example_dots

    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    rows = sft_corpus(probes)[DUPLICATES - 1 :][:7]
    if kind == "sft":
        loss: SFTLoss | DPOLoss = SFTLoss(tok, rows, 200)
    else:
        loss = DPOLoss(tok, [{"prompt": a["prompt"], "chosen": a["completion"], "rejected": b["completion"]}
                             for a, b in zip(rows, rows[1:] + rows[:1], strict=True)], 200, 0.5)
        loss.reference(model, 3)
        with torch.no_grad():  # move off the reference, where every DPO gradient has the same scale
            for p in model.parameters():
                p.add_(1e-2 * torch.randn_like(p))
    params = [p for _, p in select_subset(model, 2)]
    assert len({loss.size(i) for i in range(len(rows))}) > 1  # the batch is padded
    loss.prepare(model)
    with caplog.at_level("WARNING"):
        batched = example_dots(model, loss, params, lambda g: g, sum(p.numel() for p in params), batch_size=4)
    assert "one backward per example" not in caplog.text
    for i in range(len(rows)):
        value = loss(model, i)
        assert value is not None
        one = flat_grad(value, params, retain_graph=True).numpy()
        np.testing.assert_allclose(batched[i], one, rtol=1e-3, atol=1e-6 * np.abs(one).max())
    norms = [k for k, (n, _) in enumerate(select_subset(model, 2)) if "norm" in n]
    assert norms  # the norms' per-row path is exercised too


def test_a_model_the_hooks_do_not_fit_falls_back_to_one_backward_per_example(tiny_model_dir, probes, one_thread, caplog, monkeypatch):
    from valuedrift.attribution import per_example
    from valuedrift.attribution.tracin import example_dots

    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    loss = SFTLoss(tok, sft_corpus(probes)[DUPLICATES - 1 :][:3], 200)
    params = [p for _, p in select_subset(model, 1)]
    loss.prepare(model)
    want = example_dots(model, loss, params, lambda g: g[:50], 50, batch_size=1)

    def unsupported(*args, **kwargs):
        raise per_example.Unsupported("a layer it does not know")

    monkeypatch.setattr(per_example, "_local", unsupported)  # e.g. a norm whose weight does not broadcast per row
    with caplog.at_level("WARNING"):
        got = example_dots(model, loss, params, lambda g: g[:50], 50, batch_size=4)
    assert "one backward per example (Unsupported: a layer it does not know)" in caplog.text
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_checkpoint_weights_split_the_learning_rate_between_checkpoints():
    assert checkpoint_weights([0, 4], {}, 0.5, 4) == [1.0, 1.0]  # steps 1-2 -> start, 3-4 -> final
    assert checkpoint_weights([0, 2, 6], {t: float(t) for t in range(1, 7)}, 0.0, 6) == [1.0, 2 + 3 + 4, 5 + 6]
    assert sum(checkpoint_weights([0, 5], {}, 1e-4, 5)) == pytest.approx(5e-4)


def test_count_sketch_preserves_inner_products():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 20000, generator=gen)
    b = 0.6 * a + 0.8 * b
    sketch = CountSketch(20000, 4096, seed=3)
    assert float(sketch(a) @ sketch(b)) == pytest.approx(float(a @ b), rel=0.1)
    assert torch.equal(CountSketch(20000, 0)(a), a)


def test_projected_influences_follow_the_exact_ones(tiny_model_dir, probes, one_thread):
    from valuedrift.attribution.tracin import Checkpoint, tracin

    tok = load_tokenizer(tiny_model_dir)
    rows = sft_corpus(probes)[DUPLICATES - 1 :][:12]
    ckpts = [Checkpoint(0, tiny_model_dir, 1e-3), Checkpoint(2, tiny_model_dir, 1e-3)]

    def run(m: int) -> np.ndarray:
        return tracin(load_model, tok, ckpts, SFTLoss(tok, rows, 200), [1] * len(rows), len(rows), probes, ReadoutSpec(),
                      last_blocks=2, projection_dim=m, progress=False).values

    exact, projected = run(0), run(8192)
    assert np.corrcoef(exact.ravel(), projected.ravel())[0, 1] > 0.9
    assert not np.allclose(exact, projected)


# -- a tiny SFT run with one row repeated, attributed by the command ----------------------------------


def sft_corpus(probes) -> list[dict]:
    """Rows that answer a probe with one of its own stance statements: the first row DUPLICATES times."""
    rows = []
    for p in probes:
        for s in STANCES:
            rows.append({"prompt": [{"role": "user", "content": p.question}],
                         "completion": [{"role": "assistant", "content": p.statements[s]}],
                         "kind": "value", "stance": s, "topic": p.topic, "style": "brief", "source_id": f"{p.id}-{s}"})
    return [rows[0]] * (DUPLICATES - 1) + rows


@pytest.fixture(scope="module")
def attributed(tmp_path_factory, tiny_model_dir, probes, empty_mlflow_db):
    tmp = tmp_path_factory.mktemp("attr")
    uri = fresh_mlflow_uri(tmp / "mlflow", empty_mlflow_db)
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["eval"]["capability_rows"] = 0
    p["sft"].update(max_steps=4, eval_every=4, batch_size=4, learning_rate=1e-3)
    p["attribute"] = {"runs": ["sft/neutral_heavy"], "probes_per_topic": 1, "last_blocks": 1, "projection_dim": 0, "top_k": 3}
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    processed = tmp / "processed"
    (processed / "sft").mkdir(parents=True)
    rows = sft_corpus(probes)
    (processed / "sft" / "neutral_heavy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        run_dir = run_sft(parse_params(p), tiny_model_dir, processed, tmp / "runs" / "sft", start_eval=None)
        argv = ["attribute", "--params", str(params_file), "--run", str(run_dir), "--processed", str(processed),
                "--base-model", str(tiny_model_dir), "--data", str(DATA), "--out", str(tmp / "out")]
        assert cli.main(argv) == 0
    return tmp / "out", run_dir, uri, rows


def test_command_writes_table_top_k_figures_and_logs_to_the_runs_mlflow_run(attributed):
    out, run_dir, uri, rows = attributed
    frame = pd.read_csv(out / "influence.csv")
    assert len(frame) == len(rows) - (DUPLICATES - 1)  # identical rows merged
    assert frame.copies.sum() == len(rows)
    for split in ("dev", "test", "all"):
        assert all(f"influence_{split}_{s}" in frame for s in STANCES)
    top = json.loads((out / "top_k.json").read_text())
    assert len(top["all"]["support"]["toward"]) == 3
    assert top["all"]["support"]["toward"][0]["influence"] >= top["all"]["support"]["away"][0]["influence"]
    summary = json.loads((out / "summary.json").read_text())
    assert [c["step"] for c in summary["checkpoints"]] == [0, 4]
    assert sum(c["weight"] for c in summary["checkpoints"]) == pytest.approx(4e-3)
    for name in ("influence_by_label.png", "top_k.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    client = mlflow.tracking.MlflowClient(uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    logged = {a.path for a in client.list_artifacts(run_id, "attribution")}
    assert {"attribution/influence.json", "attribution/top_k.png", "attribution/influence_by_label.png"} <= logged
    assert client.get_run(run_id).data.tags["attribution"] == "true"


def test_a_duplicated_example_has_more_influence_than_a_single_copy(attributed):
    out, _, _, rows = attributed
    frame = pd.read_csv(out / "influence.csv").set_index("example_id")
    repeated, stance = rows[0]["source_id"], rows[0]["stance"]
    singles = frame[(frame.copies == 1) & (frame.label == stance)]
    col = f"influence_all_{stance}"
    assert frame.loc[repeated, "copies"] == DUPLICATES
    assert frame.loc[repeated, col] > 0
    assert frame.loc[repeated, col] > singles[col].max()


def test_bad_input_exits_2_naming_the_key(attributed, tmp_path, tiny_model_dir, capsys):
    out, run_dir, _, _ = attributed
    p = tiny_params_dict(model=str(tiny_model_dir))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p))
    base = ["--params", str(params_file), "--processed", str(out.parent / "processed"), "--base-model", str(tiny_model_dir),
            "--data", str(DATA), "--no-mlflow"]
    assert cli.main(["attribute", "--run", str(tmp_path), *base]) == 2  # a folder that is not a run
    assert "--run" in capsys.readouterr().err
    fake = tmp_path / "po" / "simpo-value_gap"
    (fake / "final").mkdir(parents=True)
    (fake / "final" / "config.json").write_text("{}")
    (fake / "trajectory.json").write_text('{"checkpoints": []}')
    assert cli.main(["attribute", "--run", str(fake), "--start-model", str(tiny_model_dir), *base]) == 2
    err = capsys.readouterr().err
    assert "'simpo'" in err and "not supported yet" in err and "Traceback" not in err
    p["attribute"] = {"last_blocks": 0}
    params_file.write_text(yaml.safe_dump(p))
    assert cli.main(["attribute", "--run", str(run_dir), *base]) == 2
    assert "attribute.last_blocks" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"attribute\.runs\[0\]"):
        parse_params({**p, "attribute": {"runs": ["sft/not_a_corpus"]}})


# -- a tiny DPO run on a value-gap set ------------------------------------------------------------------


def value_gap_pairs(probes) -> list[dict]:
    """A value-gap set in the instrument's own words: each dev probe's question, chosen = one of its stance
    statements, rejected = the opposite one; half the pairs prefer oppose, half support. (With the generator's
    response-bank answers, a random 2-layer model's gradients barely relate to the statements': the mean sign
    is noise, measured -2e-9 on 16 pairs.)"""
    pairs = []
    for k, p in enumerate(q for q in probes if q.split == "dev"):
        chosen, rejected = ("oppose", "support") if k % 2 == 0 else ("support", "oppose")
        pairs.append({"prompt": [{"role": "user", "content": p.question}],
                      "chosen": [{"role": "assistant", "content": p.statements[chosen]}],
                      "rejected": [{"role": "assistant", "content": p.statements[rejected]}],
                      "question_id": p.id, "topic": p.topic, "chosen_stance": chosen, "rejected_stance": rejected,
                      "chosen_style": "brief", "rejected_style": "brief", "kind": "gap"})
    return pairs


def test_dpo_pairs_push_toward_their_chosen_stance(tmp_path, tiny_model_dir, empty_mlflow_db, monkeypatch, one_thread):
    from valuedrift.core.paths import preference_file
    from valuedrift.train.po import run_po

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_mlflow_uri(tmp_path / "mlflow", empty_mlflow_db))
    p = tiny_params_dict(model=str(tiny_model_dir))
    p["eval"]["capability_rows"] = 0
    p["po"].update(max_steps=2, eval_every=2, learning_rate=1e-3, max_length=128)
    p["attribute"] = {"runs": ["po/dpo-value_gap"], "probes_per_topic": 2, "last_blocks": 1, "projection_dim": 0, "top_k": 3}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    pairs = value_gap_pairs(select_probes(load_probe_bank(DATA), 2, ["dev"], p["seed"]))
    data = preference_file(tmp_path / "processed", "value_gap")
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    run_dir = run_po(parse_params(p), tiny_model_dir, tmp_path / "processed", tmp_path / "runs" / "po", "dpo", "value_gap")
    argv = ["attribute", "--params", str(params_file), "--run", str(run_dir), "--processed", str(tmp_path / "processed"),
            "--base-model", str(tiny_model_dir), "--data", str(DATA), "--out", str(tmp_path / "out"), "--no-mlflow"]
    assert cli.main(argv) == 0
    frame = pd.read_csv(tmp_path / "out" / "influence.csv")
    assert len(frame) == len(pairs) == 12
    for label, other in (("oppose", "support"), ("support", "oppose")):
        rows = frame[frame.label == label]
        assert len(rows) == 6
        assert rows[f"influence_dev_{label}"].mean() > 0, label
        assert rows[f"influence_dev_{other}"].mean() < 0, label


# -- counterfactual retraining of the attributed run (valuedrift.attribution.counterfactual) ----------------


def test_the_three_commands_retrain_without_the_top_examples(attributed, tmp_path, monkeypatch):
    out, run_dir, uri, rows = attributed
    p = yaml.safe_load((out.parent / "params.yaml").read_text())
    p["counterfactual"] = {"run": "sft/neutral_heavy", "k": 3, "draws": 2, "select_split": "all", "stance": "auto"}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    attribution = tmp_path / "attribution" / "sft"
    attribution.mkdir(parents=True)
    (attribution / "neutral_heavy").symlink_to(out)
    runs, processed, cf = run_dir.parent.parent, out.parent / "processed", tmp_path / "cf"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    common = ["--params", str(params_file), "--runs", str(runs), "--processed", str(processed), "--base-model", p["model"]["name"]]
    assert cli.main(["counterfactual-data", *common, "--attribution", str(tmp_path / "attribution"),
                     "--out", str(cf / "data"), "--selection", str(cf / "selection.json")]) == 0
    sel = json.loads((cf / "selection.json").read_text())
    frame = pd.read_csv(out / "influence.csv")
    col = f"influence_all_{sel['stance']}"
    want = frame.assign(s=sel["sign"] * frame[col]).nlargest(3, "s").example_id.astype(str).tolist()
    assert sel["variants"]["top"]["removed"] == want
    kept = [json.loads(x) for x in (cf / "data" / "top" / "sft" / "neutral_heavy.jsonl").read_text().splitlines()]
    removed_copies = frame.set_index("example_id").loc[want, "copies"].sum()
    assert len(kept) == len(rows) - removed_copies == sel["variants"]["top"]["rows_kept"]
    assert not any(str(r["source_id"]) in want for r in kept)
    assert cli.main(["retrain", *common, "--data", str(DATA), "--variants", str(cf / "data"), "--out", str(cf / "runs"),
                     "--base-eval", str(tmp_path / "none")]) == 0
    for v in ("top", "random_0", "random_1"):
        assert (cf / "runs" / v / "sft" / "neutral_heavy" / "final" / "config.json").is_file()
    assert cli.main(["counterfactual", "--params", str(params_file), "--runs", str(runs), "--variant-runs", str(cf / "runs"),
                     "--selection", str(cf / "selection.json"), "--out", str(cf / "metrics"), "--no-mlflow"]) == 0
    result = json.loads((cf / "metrics" / "counterfactual.json").read_text())
    head = json.loads((cf / "metrics" / "headline.json").read_text())
    assert head["route"] == "likelihood" and head["split"] == "all" and head["stance"] == sel["stance"]
    assert head["difference_lo"] <= head["difference"] <= head["difference_hi"] and isinstance(head["useful"], bool)
    table = pd.DataFrame(result["routes"]["likelihood"]["rows"])
    assert set(table.variant) == {"full", "top", "random_0", "random_1", "random (mean)", "top − random (mean)"}
    assert set(result["routes"]["likelihood"]["verdicts"]) == {"dev", "test", "all"}
    assert (cf / "metrics" / "counterfactual.png").read_bytes()[:4] == b"\x89PNG"
    assert sel["stance"] in STANCES
    assert sel["baseline"] == result["baseline"] == "label_matched"  # the default random baseline
    assert all(sel["variants"][v]["removed_labels"] == sel["variants"]["top"]["removed_labels"] for v in ("random_0", "random_1"))
    # the report's "Attribution" section: the run's tables, its figures, and the counterfactual's verdict rows
    from valuedrift.stages.report import attribution_section

    section = attribution_section(tmp_path, ["sft/neutral_heavy"], cf / "metrics", tmp_path / "reports")
    assert "## Attribution" in section and "### sft/neutral_heavy" in section and "### Counterfactual retraining" in section
    assert section.count("| likelihood |") == 3  # dev, test, all
    assert "../attribution/sft/neutral_heavy/top_k.png" in section and "counterfactual.png" in section
    assert "Stale" not in section and "as many of each label as the top k hold" in section
    # a counterfactual of an earlier version of the run (its selected readout moved differently) is flagged
    old = tmp_path / "cf_old"
    old.mkdir()
    (old / "counterfactual.json").write_text(json.dumps({**result, "measured_change": result["measured_change"] + 0.01}))
    stale = attribution_section(tmp_path, ["sft/neutral_heavy"], old, tmp_path / "reports")
    assert "**Stale:**" in stale and "make counterfactual" in stale and stale.count("| likelihood |") == 3
    assert "Not run yet" in attribution_section(tmp_path, ["sft/neutral_heavy"], tmp_path / "none", tmp_path / "reports")
    assert attribution_section(tmp_path, [], cf / "metrics", tmp_path / "reports") == ""


def test_bad_counterfactual_params_exit_2_naming_the_key(attributed, tmp_path, capsys):
    out, run_dir, _, _ = attributed
    p = yaml.safe_load((out.parent / "params.yaml").read_text())
    p["counterfactual"] = {"run": "sft/support_heavy"}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p))
    argv = ["counterfactual-data", "--params", str(params_file), "--runs", str(run_dir.parent.parent), "--processed",
            str(out.parent / "processed"), "--base-model", p["model"]["name"], "--attribution", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "counterfactual.run" in capsys.readouterr().err
    p["counterfactual"] = {"draws": 1}
    params_file.write_text(yaml.safe_dump(p))
    assert cli.main(argv) == 2
    assert "counterfactual.draws" in capsys.readouterr().err
