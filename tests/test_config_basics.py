"""params.yaml parsing: the shipped file is valid; bad values name their key."""

from __future__ import annotations

import pytest

from valuedrift.config.load import load_params, parse_params
from valuedrift.core.errors import ConfigError

from .conftest import ROOT, tiny_params_dict


def test_shipped_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.model.trust_remote_code is False
    assert p.po.start_from in p.sft.corpora and set(p.sft.corpora) <= set(p.prepare_data.corpora)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda p: p["sft"].update(learning_rate=-1e-5), "sft.learning_rate"),
        (lambda p: p["sft"].update(eval_every=0), "sft.eval_every"),
        (lambda p: p["po"].update(algorithms=["ppo"]), "po.algorithms[0]"),
        (lambda p: p["eval"].update(batch_size="eight"), "eval.batch_size"),
        (lambda p: p["sft"].update(lerning_rate=1e-5), "sft.lerning_rate"),
        (lambda p: p["po"]["hparams"]["dpo"].update(beta=0), "po.hparams.dpo.beta"),
        (lambda p: p["model"].update(name="./no/such/model"), "model.name"),
    ],
)
def test_invalid_values_name_the_key(mutate, key):
    p = tiny_params_dict()
    mutate(p)
    with pytest.raises(ConfigError) as e:
        parse_params(p)
    assert e.value.key == key
    assert key in str(e.value)
