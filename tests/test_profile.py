"""Params profiles: dotted overrides are validated and turned into `dvc exp run -S` arguments."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from valuedrift import cli
from valuedrift.config.load import load_params, parse_params
from valuedrift.core import yaml12
from valuedrift.core.errors import ConfigError
from valuedrift.stages.profile import apply_overrides, dvc_set_args

from .conftest import ROOT


def test_full_study_profile_is_valid_and_covers_the_paper_grid():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    prof = yaml.safe_load((ROOT / "profiles" / "full_study.yaml").read_text())
    p = parse_params(apply_overrides(base, prof))
    assert len(p.seeds) == 3 and set(p.sft.corpora) == {"neutral_heavy", "support_heavy"}
    assert {"dpo", "simpo"} <= set(p.po.algorithms) and any(a.startswith("rm_") for a in p.po.algorithms)
    targets = {p.prepare_data.preference_sets[s].target for s in p.po.preference_sets}
    assert {"reinforce", "reverse"} <= targets
    assert any(p.prepare_data.preference_sets[s].gap == 0 for s in p.po.preference_sets)


def test_overrides_to_dvc_args_and_errors():
    assert dvc_set_args({"seeds": [0, 1], "po.max_steps": 4}) == ["-S", "seeds=[0,1]", "-S", "po.max_steps=4"]
    with pytest.raises(ConfigError, match="nosuch"):
        apply_overrides({"po": {}}, {"nosuch.key": 1})
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="po.max_steps"):
        parse_params(apply_overrides(base, {"po.max_steps": 0}))


def test_gemma_base_profile_is_valid_and_starts_from_the_bundled_base_model():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    prof = yaml.safe_load((ROOT / "profiles" / "gemma_base.yaml").read_text())
    p = parse_params(apply_overrides(base, prof))
    assert p.model.name == "gemma3-270m"
    assert dvc_set_args(prof) == ["-S", "model.name=\"gemma3-270m\""]


PAPER_PROFILES = ["paper_llama3_3b.yaml", "paper_qwen3_4b.yaml"]


@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_paper_profiles_reproduce_the_papers_design_and_pass_check_params(name, tmp_path, capsys):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = apply_overrides(base, yaml.safe_load((ROOT / "profiles" / name).read_text()))
    p = parse_params(merged)
    assert p.model.chat_template and p.model.dtype == "bfloat16" and "/" in p.model.name and len(p.seeds) == 3
    kinds = {c: p.prepare_data.corpora[c].source.kind for c in p.sft.corpora}
    assert sorted(kinds.values()) == ["alpaca", "wildchat"]
    assert p.sft.num_train_epochs == 3 and p.sft.max_steps is None and p.sft.eval_every == 500 and p.po.eval_every == 100
    sets = {s: p.prepare_data.preference_sets[s] for s in p.po.preference_sets}
    assert {s.source.kind for s in sets.values() if s.source is not None} == {"ultrafeedback", "hh-rlhf"}
    assert {s.target for s in sets.values() if s.source is None} == {"reverse", "reinforce"}
    assert {"dpo", "simpo"} <= set(p.po.algorithms) and any(a.startswith("rm_") for a in p.po.algorithms)
    assert p.sft.peft is not None and p.po.peft is not None
    assert p.eval.judges[p.eval.paper.judge].kind == "openai"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    capsys.readouterr()
    assert cli.main(["check-params", "--params", str(tmp_path / "params.yaml")]) == 0, capsys.readouterr().err


def test_a_profile_with_new_keys_mappings_and_removals_round_trips_through_dvc_exp_run(tmp_path):
    """What `valuedrift profile` prints is what `dvc exp run -S` applies: the params file DVC writes equals
    apply_overrides(params.yaml, profile) for the paper profile (new corpora, mappings, a removed key)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}

    def run(*cmd: str) -> None:
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr

    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    stage = {"stages": {"dump": {"cmd": "cp params.yaml applied.yaml", "params": ["model", "prepare_data", "tune"],
                                 "outs": [{"applied.yaml": {"cache": False}}]}}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stage))
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(*cmd)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    prof = yaml.safe_load((ROOT / "profiles" / PAPER_PROFILES[0]).read_text())
    run(*dvc, "exp", "run", *dvc_set_args(prof, base))
    assert yaml12.load((repo / "applied.yaml").read_text()) == apply_overrides(base, prof)  # 5e-06 read as DVC wrote it


def test_params_floats_as_dvc_writes_them_are_numbers(tmp_path):
    """`dvc exp run -S po.learning_rate=5.0e-06` leaves `learning_rate: 5e-06` (YAML 1.2); read as a number."""
    text = (ROOT / "params.yaml").read_text().replace("  learning_rate: 2.0e-5\n", "  learning_rate: 5e-06\n", 1)
    assert "5e-06" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").po.learning_rate == 5e-06
    assert yaml.safe_load(text)["po"]["learning_rate"] == "5e-06"  # what plain PyYAML would have made of it
