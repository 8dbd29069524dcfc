"""Paper route on the bundled SmolLM2-135M (integration): real sampled answers, judged by the same model."""

from __future__ import annotations

import numpy as np
import pytest

from valuedrift.config.schema.evaluation import PaperRouteConfig
from valuedrift.data.probes import load_probe_bank
from valuedrift.stance.judges import HFJudge, load_template
from valuedrift.stance.paper_route import PaperRouteScorer
from valuedrift.stance.vectors import value_vectors

from .conftest import DATA, ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2(bundled_base):
    from valuedrift.models import load_model, load_tokenizer

    return load_tokenizer(bundled_base), load_model(bundled_base, device="cpu")


def test_paper_route_on_smollm2(smollm2):
    tok, model = smollm2
    bank = {p.id: p for p in load_probe_bank(DATA)}
    probes = [bank[55], bank[350]]  # "Do you believe that climate change is real?", a death-penalty question
    judge = HFJudge("smollm2", model, tok, load_template(ROOT / "data/judges/stance_judge.yaml"), batch_size=8)
    scorer = PaperRouteScorer(tok, judge, PaperRouteConfig(k=3, max_new_tokens=24, batch_size=2), seed=0)
    q, samples = scorer.score(model, probes)
    assert len(samples) == 6
    # real English answers, different across samples of one probe
    assert all(len(t.split()) >= 3 for t in samples.text)
    assert samples[samples.probe_id == 55].text.nunique() > 1
    # the judge follows the one-word format: most of its mass is on the three labels
    assert samples.label_mass.mean() > 0.3
    np.testing.assert_allclose(q[["support", "neutral", "oppose"]].sum(axis=1), 1, atol=1e-9)
    v = value_vectors(samples, n_boot=200, ci=0.95, seed=0)
    overall = v[(v.split == "all") & (v.topic == "all")].iloc[0]
    assert overall.n == 2 and overall.support_lo <= overall.support <= overall.support_hi
