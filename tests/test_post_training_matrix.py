"""dvc.yaml expands the sft stage over sft.corpora and the po stage over algorithms × preference sets, every
po entry depending on the one SFT run named by po.start_from (real `dvc` commands on a copy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT

BIN = Path(sys.executable).parent


def dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_matrix_over_corpora_algorithms_and_preference_sets(tmp_path):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["sft"]["corpora"] = ["neutral_heavy", "support_heavy"]
    p["po"].update(start_from="support_heavy", algorithms=["dpo", "kto", "rm_rloo"], preference_sets=["value_gap", "style_only"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    dvc(["init", "--no-scm", "-q"], tmp_path)
    stages = set(dvc(["stage", "list", "--name-only"], tmp_path).split())
    assert {"sft@neutral_heavy", "sft@support_heavy"} <= stages
    po = {s for s in stages if s.startswith("po@")}
    assert po == {f"po@{a}-{s}" for a in ("dpo", "kto", "rm_rloo") for s in ("value_gap", "style_only")}
    dag = dvc(["dag", "--dot", "po@kto-style_only"], tmp_path)
    assert "sft@support_heavy" in dag and "sft@neutral_heavy" not in dag  # starts from po.start_from only
