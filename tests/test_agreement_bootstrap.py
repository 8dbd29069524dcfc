"""Classification metrics against hand-computed confusion matrices, their percentile bootstrap CIs (item
and cluster), and the agreement of two labelling passes (valuedrift.metrics.agreement)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from valuedrift.data.labelled_generations import read_labels
from valuedrift.metrics.agreement import (
    BOOT_METRICS,
    bootstrap_classification,
    classification_metrics,
    cohen_kappa,
    confusion_scores,
    pass_agreement,
)

SUP, NEU, OPP = "support", "neutral", "oppose"
GOLD = [SUP, SUP, SUP, NEU, NEU, OPP, OPP, OPP, OPP, OPP]
PRED = [SUP, SUP, NEU, NEU, OPP, OPP, OPP, OPP, SUP, NEU]


def test_metrics_match_a_hand_computed_confusion_matrix():
    # rows gold, columns predicted (support, neutral, oppose):
    #   support [2, 1, 0]   row 3    column sums: support 3, neutral 3, oppose 4
    #   neutral [0, 1, 1]   row 2
    #   oppose  [1, 1, 3]   row 5    n = 10, trace = 6
    # accuracy = 6/10 = 0.6
    # support: P = 2/3, R = 2/3, F1 = 2/3;  neutral: P = 1/3, R = 1/2, F1 = (1/3)/(5/6) = 0.4
    # oppose:  P = 3/4, R = 3/5, F1 = 0.9/1.35 = 2/3;  macro-F1 = (2/3 + 0.4 + 2/3)/3 = 26/45 = 0.57777…
    # p_e = (3·3 + 2·3 + 5·4)/100 = 0.35;  κ = (0.6 − 0.35)/(1 − 0.35) = 5/13 = 0.384615…
    m = classification_metrics(GOLD, PRED)
    assert m["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 1], [1, 1, 3]]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["macro_f1"] == pytest.approx(0.5777777777777777)
    assert m["kappa"] == pytest.approx(0.38461538461538464)
    assert m["per_stance"][NEU] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2})
    assert cohen_kappa(np.array(m["confusion"]["matrix"])) == pytest.approx(5 / 13)


def test_confusion_scores_vectorise_and_keep_the_edge_cases():
    const = np.array([[4, 0, 0], [0, 0, 0], [0, 0, 0]])  # both labellings constant and equal: p_e = 1 → κ = 1
    empty = np.zeros((3, 3))
    sc = confusion_scores(np.stack([const, empty]))
    assert sc["kappa"][0] == 1.0 and np.isnan(sc["kappa"][1]) and np.isnan(sc["accuracy"][1])
    assert sc["macro_f1"][0] == pytest.approx(1 / 3)  # F1 = 1 for support, 0 for the two absent stances
    assert sc["macro_f1"][1] == 0.0


def test_bootstrap_contains_the_point_estimate_and_narrows_with_more_items():
    small = bootstrap_classification(GOLD * 3, PRED * 3, 1000, 0.95, seed=0)
    large = bootstrap_classification(GOLD * 30, PRED * 30, 1000, 0.95, seed=0)
    point = classification_metrics(GOLD, PRED)
    for k in BOOT_METRICS:
        for r in (small, large):
            assert r[k]["lo"] <= r[k]["value"] <= r[k]["hi"]
            assert r[k]["value"] == pytest.approx(point[k])
        assert large[k]["hi"] - large[k]["lo"] < 0.6 * (small[k]["hi"] - small[k]["lo"])  # ≈ 1/√10
    assert small["unit"] == "item" and small["n_units"] == 30
    assert small["confusion"]["matrix"] == [[6, 3, 0], [0, 3, 3], [3, 3, 9]]
    again = bootstrap_classification(GOLD * 3, PRED * 3, 1000, 0.95, seed=0)
    other = bootstrap_classification(GOLD * 3, PRED * 3, 1000, 0.95, seed=1)
    assert again == small and other["kappa"] != small["kappa"]  # seeded


def test_cluster_bootstrap_resamples_groups_not_items():
    # 10 questions, 6 answers each, all answers of a question with the same gold and prediction: resampling
    # questions is resampling 10 units, so the CI equals the item bootstrap of the 10 deduplicated pairs
    # (same seed, same draws; every metric is invariant to scaling the confusion matrix) and is wider than
    # the item bootstrap over the 60 answers that pretends they are independent.
    k = 6
    gold = [g for g in GOLD for _ in range(k)]
    pred = [p for p in PRED for _ in range(k)]
    groups = [q for q in range(len(GOLD)) for _ in range(k)]
    cluster = bootstrap_classification(gold, pred, 1000, 0.95, seed=3, groups=groups)
    dedup = bootstrap_classification(GOLD, PRED, 1000, 0.95, seed=3)
    items = bootstrap_classification(gold, pred, 1000, 0.95, seed=3)
    assert cluster["unit"] == "group" and cluster["n_units"] == 10 and cluster["n"] == 60
    for m in BOOT_METRICS:
        assert cluster[m]["lo"] == pytest.approx(dedup[m]["lo"]) and cluster[m]["hi"] == pytest.approx(dedup[m]["hi"])
        assert cluster[m]["hi"] - cluster[m]["lo"] > items[m]["hi"] - items[m]["lo"]


def test_bootstrap_means_share_the_resamples_and_weight_groups_by_size():
    values = np.arange(6, dtype=float)  # mean 2.5
    r = bootstrap_classification([SUP] * 6, [SUP] * 6, 500, 0.9, seed=0, groups=[0, 0, 0, 0, 1, 2], means={"x": values})
    assert r["x"]["value"] == pytest.approx(2.5)
    # a resample is a mix of the groups {0,1,2,3}, {4}, {5}: its mean lies in [mean of group 0, 5] = [1.5, 5]
    assert 1.5 <= r["x"]["lo"] <= r["x"]["value"] <= r["x"]["hi"] <= 5
    assert r["kappa"] == {"value": 1.0, "lo": 1.0, "hi": 1.0}  # constant and equal labellings in every resample


def test_bootstrap_degenerate_inputs():
    one = bootstrap_classification([SUP], [OPP], 200, 0.95, seed=0)
    assert one["accuracy"] == {"value": 0.0, "lo": 0.0, "hi": 0.0}  # < 2 units: no interval
    empty = bootstrap_classification([], [], 200, 0.95, seed=0)
    assert empty["n"] == 0 and np.isnan(empty["accuracy"]["value"])
    with pytest.raises(ValueError, match="one entry per item"):
        bootstrap_classification([SUP, SUP], [SUP], 200, 0.95, seed=0)
    with pytest.raises(ValueError, match="one value per item"):
        bootstrap_classification([SUP, SUP], [SUP, SUP], 200, 0.95, seed=0, means={"x": [1.0]})


def test_pass_agreement_on_two_label_files(tmp_path):
    def write(name: str, rows: list[tuple[str, str, str | None]]):
        (tmp_path / name).write_text("".join(json.dumps({"aid": a, "stance": s, "flag": f}) + "\n" for a, s, f in rows))
        return read_labels(tmp_path / name)

    first = write("labels.jsonl", [("a1", SUP, None), ("a2", SUP, None), ("a3", NEU, None), ("a4", OPP, None), ("a5", OPP, None),
                                   ("a6", SUP, None), ("a7", NEU, "off_topic")])
    second = write("labels_pass2.jsonl", [("a1", SUP, None), ("a2", SUP, None), ("a3", NEU, "incoherent"), ("a4", OPP, None), ("a5", SUP, None)])
    # shared a1..a5: rows first pass, columns second pass: support [2, 0, 0], neutral [0, 1, 0], oppose [1, 0, 1]
    # raw agreement = 4/5 = 0.8; p_e = (2·3 + 1·1 + 2·1)/25 = 0.36; κ = (0.8 − 0.36)/(1 − 0.36) = 0.6875
    # flags agree on 4 of 5 (a3 differs)
    r = pass_agreement(first, second, 500, 0.95, seed=0)
    assert r["n"] == 5 and r["only_a"] == 2 and r["only_b"] == 0
    assert r["raw_agreement"]["value"] == pytest.approx(0.8)
    assert r["kappa"]["value"] == pytest.approx(0.6875)
    assert r["flag_agreement"] == pytest.approx(0.8)
    assert r["confusion"]["matrix"] == [[2, 0, 0], [0, 1, 0], [1, 0, 1]]
    for k in ("kappa", "raw_agreement"):
        assert r[k]["lo"] <= r[k]["value"] <= r[k]["hi"] <= 1
