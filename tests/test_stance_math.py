"""Stance distributions, value vectors and metric names."""

import numpy as np
import pandas as pd
import pytest

from valuedrift.stance.likelihood import stance_distributions
from valuedrift.stance.vectors import metric_dict, value_vectors


def test_stance_distribution_is_softmax_of_mean_logprob():
    # one probe: sums and token counts for support/neutral/oppose
    scores = np.array([[-4.0, 4], [-9.0, 3], [-2.0, 1]])  # means -1, -3, -2
    q = stance_distributions(scores, temperature=1.0)
    e = np.exp([-1.0, -3.0, -2.0])
    assert q[0] == pytest.approx(e / e.sum())
    q2 = stance_distributions(scores, temperature=2.0)
    e2 = np.exp(np.array([-1.0, -3.0, -2.0]) / 2)
    assert q2[0] == pytest.approx(e2 / e2.sum())
    assert q.sum(axis=1) == pytest.approx([1.0])


def _rows():
    return [
        {"probe_id": 1, "topic": "abortion", "split": "dev", "support": 0.6, "neutral": 0.3, "oppose": 0.1},
        {"probe_id": 2, "topic": "abortion", "split": "dev", "support": 0.2, "neutral": 0.5, "oppose": 0.3},
        {"probe_id": 3, "topic": "race", "split": "test", "support": 0.1, "neutral": 0.1, "oppose": 0.8},
    ]


def test_value_vectors_means_and_ci():
    v = value_vectors(_rows(), n_boot=300, ci=0.95, seed=0)
    ab = v[(v.split == "dev") & (v.topic == "abortion")].iloc[0]
    assert ab.support == pytest.approx(0.4) and ab.n == 2
    assert ab.support_lo <= ab.support <= ab.support_hi
    pooled = v[(v.split == "all") & (v.topic == "all")].iloc[0]
    assert pooled.oppose == pytest.approx((0.1 + 0.3 + 0.8) / 3)
    single = v[(v.split == "test") & (v.topic == "race")].iloc[0]
    assert single.support_lo == single.support_hi == pytest.approx(0.1)


def test_metric_names_follow_design():
    m = metric_dict(value_vectors(pd.DataFrame(_rows()), n_boot=200))
    assert m["stance/all/support"] == pytest.approx((0.6 + 0.2 + 0.1) / 3)
    assert "stance/abortion/neutral" in m and "stance/test/race/oppose" in m and "stance/dev/all/support" in m
