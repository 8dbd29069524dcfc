"""Counterfactual retraining (valuedrift.attribution.counterfactual, `valuedrift counterfactual-data`,
`retrain`, `counterfactual`): what is removed, how the drifts compare and the verdict. The three commands
end to end run in tests/test_attribution.py, on its attributed tiny SFT run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuedrift.attribution.counterfactual import (
    FULL,
    RANDOM_MEAN,
    TOP,
    compare,
    removal_sets,
    target,
    verdicts,
    without,
)
from valuedrift.config.schema.attribution import CounterfactualConfig
from valuedrift.core.errors import ConfigError


def influence_frame(values: list[float]) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"example_id": [f"e{i}" for i in range(n)], "row": [10 * i for i in range(n)],
                         "label": ["neutral" if v > 0 else "support" for v in values],
                         "influence_dev_neutral": values})


def test_top_k_follows_the_sign_of_the_drift_and_random_draws_are_seeded():
    frame = influence_frame([0.5, -2.0, 3.0, 0.1, -0.2, 1.0])
    up = removal_sets(frame, "neutral", "dev", +1, 2, 3, seed=7)
    assert up[TOP] == [20, 50]  # the two largest influences toward neutral, as rows
    down = removal_sets(frame, "neutral", "dev", -1, 2, 3, seed=7)
    assert down[TOP] == [10, 40]  # the readout fell: the examples that pushed it down most
    assert all(len(set(up[f"random_{d}"])) == 2 for d in range(3))
    assert up == removal_sets(frame, "neutral", "dev", +1, 2, 3, seed=7)
    assert len({tuple(up[f"random_{d}"]) for d in range(3)}) > 1
    with pytest.raises(ConfigError, match=r"counterfactual\.k"):
        removal_sets(frame, "neutral", "dev", +1, 6, 2, seed=0)


def test_label_matched_draws_hold_the_top_k_label_counts_and_uniform_ones_need_not():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.uniform(0.5, 1.0, 30), rng.uniform(-1.0, 0.4, 60)])  # 30 "neutral" rows rank first
    frame = influence_frame(values.tolist())
    frame.loc[frame.index % 7 == 0, "label"] = "general"
    labels = frame.set_index("row")["label"]
    matched = removal_sets(frame, "neutral", "dev", +1, 20, 4, seed=1)
    top = labels.loc[matched[TOP]].value_counts().to_dict()
    assert set(top) == {"neutral", "general"} and sum(top.values()) == 20  # two labels to match, no "support"
    for d in range(4):
        drawn = matched[f"random_{d}"]
        assert len(set(drawn)) == 20 and labels.loc[drawn].value_counts().to_dict() == top
    assert len({tuple(matched[f"random_{d}"]) for d in range(4)}) == 4
    assert matched == removal_sets(frame, "neutral", "dev", +1, 20, 4, seed=1, baseline="label_matched")
    uniform = removal_sets(frame, "neutral", "dev", +1, 20, 4, seed=1, baseline="uniform")
    assert uniform[TOP] == matched[TOP]
    assert any(labels.loc[uniform[f"random_{d}"]].value_counts().to_dict() != top for d in range(4))
    assert uniform["random_0"] == sorted(frame["row"].to_numpy()[np.random.default_rng(1).choice(90, 20, replace=False)])


def test_counterfactual_baseline_is_validated():
    CounterfactualConfig(baseline="uniform").validate("counterfactual")
    with pytest.raises(ConfigError, match=r"counterfactual\.baseline"):
        CounterfactualConfig(baseline="stratified").validate("counterfactual")


def test_without_drops_every_copy_and_target_picks_the_largest_change():
    a = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}
    b = {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "b"}]}
    assert without([a, b, a, b, a], "sft", [0]) == [b, b]
    summary = {"run": "sft/x", "readouts": {"dev/support": {"measured_change": 0.01}, "dev/neutral": {"measured_change": -0.04},
                                            "dev/oppose": {"measured_change": 0.03}}}
    assert target(summary, CounterfactualConfig()) == ("neutral", -1, -0.04)
    assert target(summary, CounterfactualConfig(stance="oppose"))[:2] == ("oppose", 1)
    with pytest.raises(ConfigError, match="select_split"):
        target(summary, CounterfactualConfig(select_split="test"))


def probe_table(neutral: np.ndarray, split: str = "dev") -> pd.DataFrame:
    rest = (1 - neutral) / 2
    return pd.DataFrame({"probe_id": np.arange(len(neutral)), "topic": [f"t{i % 3}" for i in range(len(neutral))],
                         "split": split, "support": rest, "neutral": neutral, "oppose": rest})


def test_compare_and_verdict_tell_a_useful_attribution_from_a_useless_one():
    rng = np.random.default_rng(0)
    start = probe_table(np.full(60, 0.3))
    noise = lambda: rng.normal(0, 0.01, 60)  # noqa: E731
    full = probe_table(0.3 + 0.10 + noise())
    randoms = {f"random_{d}": probe_table(0.3 + 0.09 + noise()) for d in range(3)}
    useful = compare(start, {FULL: full, TOP: probe_table(0.3 + 0.02 + noise()), **randoms}, "neutral", 3, 300, 0.95, 0)
    row = useful.set_index(["split", "variant"]).loc[("dev", TOP)]
    assert row.value == pytest.approx(0.02, abs=0.01) and row.lo < row.value < row.hi
    pooled = useful.set_index(["split", "variant"]).loc[("dev", RANDOM_MEAN)]
    assert pooled.ci_kind == "draws" and pooled.n == 3
    v = verdicts(useful, +1, 3)["dev"]
    assert v["useful"] and v["difference"] == pytest.approx(-0.07, abs=0.01) and v["difference_hi"] < 0
    same = compare(start, {FULL: full, TOP: probe_table(0.3 + 0.09 + noise()), **randoms}, "neutral", 3, 300, 0.95, 0)
    assert not verdicts(same, +1, 3)["dev"]["useful"]
    # a readout that fell: removing what pushed it down must leave it higher
    assert verdicts(useful, -1, 3)["dev"]["useful"] is False
