"""Params profiles: dotted overrides are validated and turned into `dvc exp run -S` arguments."""

import pytest
import yaml

from valuedrift.config.load import parse_params
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
