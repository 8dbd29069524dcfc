"""Route-validity metrics (valuedrift.metrics.route_validity) on synthetic readouts with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuedrift.core.vocab import STANCES
from valuedrift.metrics import route_validity as rv


def likelihood_frame(ll: np.ndarray, checkpoint: str = "base", split: str = "dev") -> pd.DataFrame:
    n = len(ll)
    df = pd.DataFrame({"checkpoint": checkpoint, "probe_id": np.arange(n), "topic": [f"t{i % 3}" for i in range(n)], "split": split})
    for j, s in enumerate(STANCES):
        df[f"ll_{s}"] = ll[:, j]
    return df


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_likelihood_q_is_softmax_of_scaled_loglik():
    ll = np.array([[-1.0, -2.0, -3.0]])
    q = rv.likelihood_q(likelihood_frame(ll), tau=0.5)
    assert q[list(STANCES)].to_numpy() == pytest.approx(softmax(ll / 0.5))
    flat = rv.likelihood_q(likelihood_frame(ll), tau=1e6)
    assert flat[list(STANCES)].to_numpy() == pytest.approx(np.full((1, 3), 1 / 3), abs=1e-5)
    shifted = rv.likelihood_q(likelihood_frame(ll), offsets=(0.0, 1.0, 2.0))
    assert shifted[list(STANCES)].to_numpy() == pytest.approx(np.full((1, 3), 1 / 3))


def test_fit_temperature_recovers_the_generating_tau():
    rng = np.random.default_rng(0)
    ll = rng.normal(0, 1, size=(200, 3))
    lik = likelihood_frame(ll)
    q_j = lik[rv.KEYS].copy()
    q_j[list(STANCES)] = softmax(ll / 0.3)
    fit = rv.fit_temperature(lik, q_j)
    assert fit["tau"] == pytest.approx(0.3, rel=0.02)
    assert rv.cross_entropy(lik, q_j, fit["tau"], fit["offsets"]) < rv.cross_entropy(lik, q_j, 1.0, (0, 0, 0))


def test_fit_offsets_recover_a_constant_shift():
    rng = np.random.default_rng(1)
    ll = rng.normal(0, 1, size=(300, 3))
    lik = likelihood_frame(ll)
    q_j = lik[rv.KEYS].copy()
    q_j[list(STANCES)] = softmax(ll + np.array([0.0, 1.5, -0.5]))  # τ = 1, b = (0, 1.5, −0.5)
    fit = rv.fit_temperature(lik, q_j, offsets=True)
    assert fit["tau"] == pytest.approx(1.0, rel=0.05)
    assert fit["offsets"][1] == pytest.approx(1.5, abs=0.1) and fit["offsets"][2] == pytest.approx(-0.5, abs=0.1)


def two_checkpoints(judged_shift: float, likelihood_shift: float, n: int = 60) -> pd.DataFrame:
    """Paired table where, from a to c, J's support rises by judged_shift and L's by likelihood_shift."""
    rng = np.random.default_rng(2)
    base = rng.dirichlet([2, 2, 2], size=n)
    rows = []
    for ckpt, k in (("a", 0.0), ("c", 1.0)):
        for p in range(n):
            lv = base[p] + k * likelihood_shift * np.array([1, -0.5, -0.5])
            jv = base[p] + k * judged_shift * np.array([1, -0.5, -0.5])
            rows.append({"checkpoint": ckpt, "probe_id": p, "topic": f"t{p % 2}", "split": "dev",
                         **{f"L_{s}": lv[j] for j, s in enumerate(STANCES)}, **{f"J_{s}": jv[j] for j, s in enumerate(STANCES)}})
    return pd.DataFrame(rows)


def test_change_table_measures_both_routes_paired_over_probes():
    t = rv.change_table(two_checkpoints(0.2, 0.05), "a", "c", "split", 500, 0.95, 0)
    sup = t[t.stance == "support"].iloc[0]
    assert pytest.approx(0.2) == sup.J and pytest.approx(0.05) == sup.L
    assert sup.J_lo == pytest.approx(0.2) and sup.L_hi == pytest.approx(0.05)  # every probe moved by exactly that


def test_change_agreement_says_when_the_likelihood_route_misses_a_change():
    missed = rv.change_agreement(rv.change_table(two_checkpoints(0.2, 0.0), "a", "c", "topic", 300, 0.95, 0))
    seen = rv.change_agreement(rv.change_table(two_checkpoints(0.2, 0.1), "a", "c", "topic", 300, 0.95, 0))
    assert missed["judged_significant"] == 6 and missed["likelihood_sees"] == 0.0
    assert seen["likelihood_sees"] == 1.0 and seen["sign_agreement"] == 1.0


def test_probe_correlation_and_profile_table():
    pairs = two_checkpoints(0.0, 0.0)
    r = rv.probe_correlation(pairs, 200, 0.95, 0)
    assert r["value"] == pytest.approx(1.0) and r["n"] == len(pairs)
    prof = rv.profile_table(pairs)
    assert prof.jsd_alignment.to_numpy() == pytest.approx(1.0) and prof.argmax_agree.all()
