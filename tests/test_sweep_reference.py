"""``tune.reference`` accepts every form params.yaml documents, through the one profile parser
(valuedrift.stance.reference.parse_profiles), and a bad topic fails naming its key."""

from __future__ import annotations

import json

import pytest
import yaml

from valuedrift.config.load import parse_params
from valuedrift.core.errors import ConfigError
from valuedrift.stance.reference import load_profile
from valuedrift.stance.vectors import record_profile
from valuedrift.tune.objectives import load_reference

from .conftest import ROOT, tiny_params_dict

PROFILES = ROOT / "data" / "reference_profiles"
THIRD = {"support": 0.3333333333333333, "neutral": 0.3333333333333334, "oppose": 0.3333333333333333}
ONE = {"support": 0.2, "neutral": 0.3, "oppose": 0.5}


def _params(reference):
    p = tiny_params_dict()
    p["tune"].update({"objectives": ["align"], "reference": reference})
    return p


def _forms(tmp_path):
    yaml_file = tmp_path / "ref.yaml"
    yaml_file.write_text(yaml.safe_dump({"race": ONE, "all": ONE}))
    profile_file = tmp_path / "prof.json"
    profile_file.write_text(json.dumps({"name": "mine", "profiles": {"all": ONE}}))
    return [
        ("uniform", {"all": THIRD}),
        (ONE, {"all": ONE}),
        ({"race": ONE, "gender": THIRD}, {"race": ONE, "gender": THIRD}),
        (str(yaml_file), {"race": ONE, "all": ONE}),
        (str(profile_file), {"all": ONE}),
    ]


def test_every_documented_form_parses(tmp_path):
    for spec, expected in _forms(tmp_path):
        params = parse_params(_params(spec))
        assert params.tune.reference == spec
        got = load_reference(params.tune.reference, PROFILES)
        assert got == {t: pytest.approx(v) for t, v in expected.items()}, spec


def test_named_profile_matches_the_eval_loader():
    assert load_reference("uniform", PROFILES) == load_profile(PROFILES / "uniform.json").profiles


@pytest.mark.parametrize("bad", [{"astrology": ONE}, {"all": ONE, "astrology": ONE}])
def test_bad_topic_names_the_key(bad, tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_params(_params(bad))
    assert e.value.key == "tune.reference.astrology" and "unknown topic" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_reference(bad, PROFILES)
    assert e.value.key == "tune.reference.astrology"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as e:
        load_reference(str(f), PROFILES)
    assert e.value.key.endswith(".astrology") and "unknown topic" in str(e.value)


def test_unknown_name_names_the_key():
    with pytest.raises(ConfigError) as e:
        load_reference("nope", PROFILES)
    assert e.value.key == "tune.reference" and "neither a file nor a profile" in str(e.value)


def test_record_profile_prefers_the_phase_vectors():
    row = {"split": "all", "topic": "all", **ONE}
    trace = {"split": "all", "topic": "all", **THIRD}
    assert record_profile({"full": [row], "trace": [trace]}) == ONE
    assert record_profile({"full": None, "trace": [trace]}) == THIRD
    with pytest.raises(KeyError):
        record_profile({"trace": [trace]}, "test")
