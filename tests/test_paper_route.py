"""Paper route: batched seeded sampling (K per probe), q(p) = mean_k p_J(·|p, y_k), and value-vector CIs
bootstrapped over probes and over samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuedrift.config.schema.evaluation import PaperRouteConfig
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.metrics.bootstrap import bootstrap_mean_ci, nested_bootstrap_mean_ci
from valuedrift.models import load_model, load_tokenizer
from valuedrift.stance import sampling
from valuedrift.stance.judges import HFJudge, load_template
from valuedrift.stance.paper_route import PaperRouteScorer, probe_distributions
from valuedrift.stance.sampling import generate_samples
from valuedrift.stance.vectors import value_vectors

from .conftest import DATA, ROOT


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_tokenizer(tiny_model_dir), load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def probes():
    return select_probes(load_probe_bank(DATA), 1, ["dev", "test"], seed=0)[:5]


def test_sampling_is_batched_seeded_and_k_per_probe(tiny, probes):
    tok, model = tiny
    kw = dict(k=3, temperature=0.7, max_new_tokens=6, seed=7)
    side = tok.padding_side
    a = generate_samples(model, tok, probes, batch_size=2, **kw)
    assert [(s.probe_id, s.sample) for s in a] == [(p.id, j) for p in probes for j in range(3)]
    assert all(0 < s.new_tokens <= 6 or s.finished for s in a)
    assert [s.text for s in a] == [s.text for s in generate_samples(model, tok, probes, batch_size=2, **kw)]
    other = generate_samples(model, tok, probes, batch_size=2, **{**kw, "seed": 8})
    assert [s.text for s in other] != [s.text for s in a]
    # samples of one probe differ from each other (temperature sampling, not K copies of one answer)
    assert len({s.text for s in a if s.probe_id == probes[0].id}) > 1
    assert tok.padding_side == side  # left padding only inside the call


def test_shared_prefill_samples_what_plain_generation_samples(tiny, probes, monkeypatch):
    """The batch's common start is prefilled once, each prompt's rest once and the cache repeated K times; the
    draws equal K-fold plain left-padded generation, with and without the shared start."""
    from valuedrift.stance.likelihood import format_prompt

    tok, model = tiny
    texts = [format_prompt(tok, p.question, "chat", None) for p in probes]
    assert sampling.common_prefix([tok(t, add_special_tokens=False)["input_ids"] for t in texts]) >= 3  # the template's start
    kw = dict(k=3, temperature=0.7, max_new_tokens=6, seed=3, batch_size=3)
    shared = generate_samples(model, tok, probes, **kw)
    per_prompt = generate_samples(model, tok, probes, shared_prefix=False, **kw)
    real = sampling._prefill
    monkeypatch.setattr(sampling, "_prefill", lambda *a: (*real(*a[:-1], False)[:2], None))  # generate prefills all K·B rows
    plain = generate_samples(model, tok, probes, **kw)
    assert [s.text for s in shared] == [s.text for s in plain] == [s.text for s in per_prompt]
    assert len({s.text for s in shared}) > 3


def test_common_prefix_never_takes_a_prompts_last_token():
    assert sampling.common_prefix([[1, 2, 3], [1, 2, 4]]) == 2
    assert sampling.common_prefix([[1, 2], [1, 2, 3]]) == 1
    assert sampling.common_prefix([[5], [5, 6]]) == 0
    assert sampling.common_prefix([[7, 8, 9]]) == 2


def test_probe_distribution_is_the_mean_over_samples():
    rows = pd.DataFrame([
        {"probe_id": 1, "topic": "t", "split": "dev", "sample": 0, "support": 1.0, "neutral": 0.0, "oppose": 0.0},
        {"probe_id": 1, "topic": "t", "split": "dev", "sample": 1, "support": 0.0, "neutral": 0.5, "oppose": 0.5},
    ])
    q = probe_distributions(rows)
    assert q[["support", "neutral", "oppose"]].to_numpy().tolist() == [[0.5, 0.25, 0.25]]
    assert q.n_samples.tolist() == [2]


def test_nested_bootstrap_covers_sampling_noise():
    rng = np.random.default_rng(0)
    n, k = 30, 5
    probe_means = rng.dirichlet([5, 5, 5], size=n)
    noisy = np.clip(probe_means[:, None, :] + rng.normal(0, 0.3, size=(n, k, 3)), 0, None)
    values = noisy / noisy.sum(axis=2, keepdims=True)
    mean, lo, hi = nested_bootstrap_mean_ci(values, 1000, 0.95, seed=1)
    np.testing.assert_allclose(mean, values.mean(axis=(0, 1)))
    assert np.all(lo < mean) and np.all(mean < hi)
    # same seed, same interval; resampling samples within probes never narrows the probe-only interval much
    np.testing.assert_array_equal(lo, nested_bootstrap_mean_ci(values, 1000, 0.95, seed=1)[1])
    _, plo, phi = bootstrap_mean_ci(values.mean(axis=1), 1000, 0.95, seed=1)
    assert np.all((hi - lo) > 0.9 * (phi - plo))
    # with no sampling noise (K identical samples) it reduces to the probe bootstrap's width
    same = np.repeat(probe_means[:, None, :], k, axis=1)
    _, slo, shi = nested_bootstrap_mean_ci(same, 2000, 0.95, seed=3)
    _, blo, bhi = bootstrap_mean_ci(probe_means, 2000, 0.95, seed=3)
    np.testing.assert_allclose(shi - slo, bhi - blo, rtol=0.2)


def test_value_vectors_of_per_sample_rows_count_probes():
    rows = [{"probe_id": p, "topic": "t", "split": "dev", "sample": j, "support": float(p % 2), "neutral": 0.0, "oppose": float(1 - p % 2)}
            for p in range(6) for j in range(3)]
    v = value_vectors(rows, n_boot=200, ci=0.95, seed=0)
    row = v[(v.split == "dev") & (v.topic == "all")].iloc[0]
    assert row.n == 6 and row.support == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same number of samples"):
        value_vectors(rows[:-1], n_boot=200)


def test_paper_route_end_to_end_on_the_tiny_model(tiny, probes):
    tok, model = tiny
    judge = HFJudge("tiny", model, tok, load_template(ROOT / "data" / "judges" / "stance_judge.yaml"))
    scorer = PaperRouteScorer(tok, judge, PaperRouteConfig(k=2, max_new_tokens=5, batch_size=3), seed=0)
    q, samples = scorer.score(model, probes)
    assert len(q) == len(probes) and len(samples) == 2 * len(probes)
    np.testing.assert_allclose(q[["support", "neutral", "oppose"]].sum(axis=1), 1, atol=1e-9)
    np.testing.assert_allclose(
        q.set_index("probe_id").support.sort_index(), samples.groupby("probe_id").support.mean().sort_index()
    )
    assert {"text", "new_tokens", "finished", "label_mass"} <= set(samples.columns)
