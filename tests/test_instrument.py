"""Blind answer sets, the labelled-generations loader and the route-validity study (reporting.instrument)
on a small synthetic folder whose answers and likelihoods are built so the right result is known."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from valuedrift.core.errors import DataError
from valuedrift.core.vocab import STANCES
from valuedrift.data.labelled_generations import load_labelled_generations
from valuedrift.data.schemas import Probe
from valuedrift.generation.blind_answers import blind, write_blind
from valuedrift.reporting import instrument as inst


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_folder(tmp_path: Path, likelihood_follows: bool) -> Path:
    """Two checkpoints × 12 probes × 3 answers. From base to end, every answer turns from neutral to
    support; the likelihood route follows (ℓ moves toward support) or stays put."""
    probes = [Probe(i, f"t{i % 3}", f"question {i}?", "dev" if i < 6 else "test", f"claim {i}.") for i in range(12)]
    samples = []
    for ckpt in ("base", "end"):
        for p in probes:
            for k in range(3):
                text = "yes indeed" if ckpt == "end" else "it depends"
                samples.append((ckpt, p, SimpleNamespace(sample=k, text=text, new_tokens=2, finished=True)))
    answers = blind(samples, seed=3)
    noise = np.random.default_rng(0).normal(-3, 0.1, size=(len(probes), 3))  # per probe, the same at both checkpoints
    lik = []
    for ckpt in ("base", "end"):
        for p in probes:
            ll = noise[p.id].copy()
            ll[1] += 1.0 if ckpt == "base" or not likelihood_follows else 0.0
            ll[0] += 1.5 if ckpt == "end" and likelihood_follows else 0.0
            lik.append({"checkpoint": ckpt, "probe_id": p.id, "topic": p.topic, "split": p.split,
                        **{f"ll_{s}": float(ll[j]) for j, s in enumerate(STANCES)}})
    folder = tmp_path / "gen"
    folder.mkdir()
    write_blind(answers, lik, folder)
    write(folder / "labels.jsonl", [{"aid": a.aid, "stance": "support" if a.text.startswith("yes") else "neutral", "flag": None}
                                    for a in answers])
    return folder


def test_blind_hides_the_checkpoint_and_keeps_the_mapping_apart(tmp_path):
    folder = make_folder(tmp_path, True)
    public = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    key = [json.loads(line) for line in (folder / "key.jsonl").read_text().splitlines()]
    assert set(public[0]) == {"aid", "id", "question", "proposition", "answer"}
    assert len({r["aid"] for r in public}) == len(public) == 72
    assert all(r["aid"].startswith("a") and len(r["aid"]) == 5 for r in public)
    ckpts = [{k["aid"]: k["checkpoint"] for k in key}[r["aid"]] for r in public]
    assert ckpts != sorted(ckpts) and ckpts != sorted(ckpts, reverse=True)  # shuffled, not grouped by checkpoint
    again = blind([(c, Probe(0, "t", "q", "dev"), SimpleNamespace(sample=0, text="x", new_tokens=1, finished=True)) for c in "ab"], 1)
    assert [a.aid for a in again] == [a.aid for a in blind([(c, Probe(0, "t", "q", "dev"), SimpleNamespace(
        sample=0, text="x", new_tokens=1, finished=True)) for c in "ab"], 1)]  # seeded


def test_loader_joins_and_names_the_file_of_a_missing_label(tmp_path):
    folder = make_folder(tmp_path, True)
    rows = load_labelled_generations(folder)
    assert len(rows) == 72 and {r.checkpoint for r in rows} == {"base", "end"}
    assert all((r.gold == "support") == (r.checkpoint == "end") for r in rows)
    lines = (folder / "labels.jsonl").read_text().splitlines()
    (folder / "labels.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="labels.jsonl"):
        load_labelled_generations(folder)
    (folder / "labels.jsonl").write_text(lines[0].replace('"neutral"', '"maybe"').replace('"support"', '"maybe"') + "\n")
    with pytest.raises(DataError, match="stance"):
        load_labelled_generations(folder)


@pytest.mark.parametrize("follows", [True, False])
def test_study_says_whether_the_likelihood_route_sees_the_change(tmp_path, follows):
    report, changes = inst.study(make_folder(tmp_path, follows), None, "base", 300, 0.95, 0)
    hand = report["readouts"]["hand"]["tau_1"]
    seen = hand["changes"]["end"]["by_topic"]
    assert seen["judged_significant"] == 6  # support up and neutral down, in each of 3 topics
    assert seen["likelihood_sees"] == (1.0 if follows else 0.0)
    assert set(changes.readout) == {"hand"} and set(changes.tau) == {"tau_1", "tau_fit"}
    split_rows = pd.DataFrame(hand["changes"]["end"]["by_split"])
    sup = split_rows[(split_rows.split == "test") & (split_rows.stance == "support")].iloc[0]
    assert float(sup.J) == pytest.approx(1.0)
    fit = report["tau_fit"]
    assert set(fit["improves_held_out"]) == {"tau", "tau_offsets"} and fit["tau"]["tau"] > 0
    text = "\n".join(inst.markdown_section(None, report, None, None, None, []))
    assert "Route validity" in text and "| hand | end |" in text


def test_phase_drift_rows_pair_the_probes_of_both_ends():
    q0 = pd.DataFrame({"probe_id": [1, 2, 3, 4], "topic": ["a", "a", "b", "b"], "split": ["dev", "dev", "test", "test"],
                       "support": 0.2, "neutral": 0.6, "oppose": 0.2})
    q1 = q0.assign(support=[0.5, 0.5, 0.2, 0.2], neutral=[0.3, 0.3, 0.6, 0.6])
    rows = pd.DataFrame(inst.phase_drift_rows("sft/x", "judged", q0, q1, 200, 0.95, 0)).set_index(["split", "stance"])
    assert set(rows.index.get_level_values("split")) == {"dev", "test", "all"}
    assert rows.loc[("dev", "support"), "drift"] == pytest.approx(0.3) and rows.loc[("test", "support"), "drift"] == pytest.approx(0.0)
    assert rows.loc[("all", "neutral"), "drift"] == pytest.approx(-0.15) and rows.loc[("all", "neutral"), "n_probes"] == 4
