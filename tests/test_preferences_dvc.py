"""DVC keys each generated preference set by its own params: changing g of one set flags only that set's
stage and, once it is regenerated, the preference runs that read it; never the model, data or SFT stages.

Real dvc in a temporary copy of the repository (``dvc init --no-scm``). The expensive stages are not run:
their outputs are stand-in files recorded in dvc.lock with ``dvc commit`` (which hashes deps, params and
outs exactly as a run would); the preferences stages run for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from valuedrift.stages import preferences as stage

from .conftest import ROOT

DVC = [sys.executable, "-m", "dvc"]
UPSTREAM = ("prepare_model", "prepare_data", "train_judge", "trace_base", "sft@neutral_heavy", "sft@support_heavy")


def dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([*DVC, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def status(repo: Path) -> dict:
    return json.loads(dvc(repo, "status", "--json") or "{}")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, repo / f)
    shutil.copytree(ROOT / "data", repo / "data")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sft"]["corpora"] = ["neutral_heavy", "support_heavy"]
    params["po"].update(start_from="neutral_heavy", algorithms=["dpo"], preference_sets=["value_gap", "style_only"])
    sets = params["prepare_data"]["preference_sets"]
    sets["value_gap"].update(target="reverse", gap=1.0, pairs=24, generator="bank")
    sets["style_only"] = {"target": "neutral", "gap": 0.0, "pairs": 24}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "init", "--no-scm", "-q")
    return repo


def test_changing_g_flags_only_the_set_and_what_reads_it(tmp_path):
    repo = make_repo(tmp_path)
    # stand-ins for the outputs of the expensive stages
    write(repo / "models/base/config.json", "{}")
    write(repo / "models/judge/config.json", "{}")
    write(repo / "runs/base/trajectory.json", "{}")
    for corpus in ("neutral_heavy", "support_heavy"):
        write(repo / f"processed/sft/{corpus}.jsonl", "{}\n")
        write(repo / f"runs/sft/{corpus}/final/config.json", "{}")
        row = {"split": "all", "topic": "all", "n": 1, "support": 0.2, "neutral": 0.7, "oppose": 0.1}
        write(repo / f"runs/sft/{corpus}/trajectory.json",
              json.dumps({"checkpoints": [{"step": 24, "phase": True, "trace": [row], "full": [row]}]}))
    for run in ("dpo-value_gap", "dpo-style_only"):
        write(repo / f"runs/po/{run}/trajectory.json", "{}")
    # the preference sets are real (the stage's own code, in process), then everything is recorded in dvc.lock
    stage.main(["--params", str(repo / "params.yaml"), "--data", str(repo / "data"), "--out", str(repo / "processed"),
                "--sft-run", str(repo / "runs/sft/neutral_heavy")])
    dvc(repo, "commit", "-f", "-q", *UPSTREAM, "preferences@value_gap", "preferences@style_only", "po@dpo-value_gap",
        "po@dpo-style_only")
    gap_file = repo / "processed/preferences/value_gap.gap.json"
    assert json.loads(gap_file.read_text())["gap"]["oppose"] == 1.0  # reverse of a neutral-favouring SFT

    before = status(repo)
    recorded = (*UPSTREAM, "preferences@value_gap", "preferences@style_only", "po@dpo-value_gap", "po@dpo-style_only")
    assert not set(before) & set(recorded), before  # a clean baseline (only never-run stages are listed)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare_data"]["preference_sets"]["value_gap"]["gap"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    after = status(repo)
    flagged = set(after) - set(before)
    assert "preferences@value_gap" in flagged
    changed = after["preferences@value_gap"][0]["changed deps"]["params.yaml"]
    assert changed == {"prepare_data.preference_sets.value_gap": "modified"}
    assert not flagged & {*UPSTREAM, "preferences@style_only", "po@dpo-style_only"}, flagged
    assert flagged <= {"preferences@value_gap", "tune"}, flagged  # tune rebuilds this set per trial

    # regenerating the set (cheap) flags the preference run that reads it, and nothing upstream
    dvc(repo, "repro", "-q", "--single-item", "preferences@value_gap")
    assert json.loads(gap_file.read_text())["gap"]["oppose"] == 0.5
    regenerated = status(repo)
    assert "po@dpo-value_gap" in regenerated
    assert not set(regenerated) & {*UPSTREAM, "preferences@value_gap", "preferences@style_only", "po@dpo-style_only"}
