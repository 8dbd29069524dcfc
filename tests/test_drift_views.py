"""What the views show (issue 17): Δv at every checkpoint with paired CIs on one chain axis, one number per
run toward the stance it is about, and a headline of a few numbers (synthetic per-probe tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuedrift.core.vocab import STANCES
from valuedrift.metrics.change import chain_offsets, delta_rows, over_seeds
from valuedrift.reporting.findings import PhaseInfo, headline_metrics, toward_rows


def table(probes: range, support: np.ndarray, split: str = "dev") -> pd.DataFrame:
    q = np.stack([support, (1 - support) / 2, (1 - support) / 2], axis=1)
    return pd.DataFrame({"probe_id": list(probes), "topic": "t", "split": split, **{s: q[:, j] for j, s in enumerate(STANCES)}})


def test_delta_is_the_paired_change_on_the_probes_every_checkpoint_scored():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 8)
    tables = {0: table(range(8), base), 5: table(range(4), base[:4] + 0.1),
              10: table(range(8), np.r_[base[:4] + 0.3, base[4:] + 0.9])}  # the end scores 4 extra probes
    rows = pd.DataFrame(delta_rows(tables, 200, 0.95, 0))
    sup = rows[(rows.split == "all") & (rows.stance == "support")].set_index("step")
    assert sup.dv.to_dict() == pytest.approx({0: 0.0, 5: 0.1, 10: 0.3})  # probes 4-7 (only at the ends) left out
    assert (sup.dv_lo <= sup.dv).all() and (sup.dv <= sup.dv_hi).all() and sup.n_probes.tolist() == [4, 4, 4]
    neu = rows[(rows.split == "all") & (rows.stance == "neutral")].set_index("step")
    assert neu.dv[10] == pytest.approx(-0.15)


def test_over_seeds_uses_the_t_interval_with_several_seeds_and_the_bootstrap_with_one():
    per_seed = pd.DataFrame([{"run": "sft/a", "seed": k, "step": 8, "split": "all", "stance": "support",
                              "dv": v, "dv_lo": v - 0.01, "dv_hi": v + 0.01} for k, v in enumerate([0.1, 0.2, 0.3])])
    three = over_seeds(per_seed, 0.95).iloc[0]
    assert three.dv == pytest.approx(0.2) and three.n_seeds == 3 and three.ci_kind == "seeds"
    assert three.dv_lo == pytest.approx(0.2 - 4.302653 * 0.1 / np.sqrt(3), abs=1e-5)
    one = over_seeds(per_seed[per_seed.seed == 0], 0.95).iloc[0]
    assert (one.dv_lo, one.dv_hi, one.ci_kind) == (pytest.approx(0.09), pytest.approx(0.11), "probes")


def test_preference_runs_continue_the_axis_of_the_sft_run_they_start_from():
    assert chain_offsets({"sft/a": 16, "sft/b": 16, "po/dpo-x": 12}, "a") == {"sft/a": 0, "sft/b": 0, "po/dpo-x": 16}


def summary_rows(phase: str, drift: dict[str, float]) -> list[dict]:
    return [{"phase": phase, "split": "all", "topic": "all", "stance": s, "magnitude": m, "ci_lo": m - 0.05,
             "ci_hi": m + 0.05, "drift_time": 0.5, "n_seeds": 1, "time_resolved_share": 1.0} for s, m in drift.items()]


def test_each_run_is_summed_up_by_the_stance_it_is_about_and_the_headline_stays_small():
    summary = pd.DataFrame(
        summary_rows("sft/nh", {"support": -0.2, "neutral": 0.1, "oppose": 0.1})
        + summary_rows("po/dpo-gap", {"support": -0.3, "neutral": 0.0, "oppose": 0.3})
        + summary_rows("po/dpo-style", {"support": 0.02, "neutral": -0.12, "oppose": 0.1}))
    infos = [PhaseInfo("sft/nh", "sft", "nh"), PhaseInfo("po/dpo-gap", "po", "dpo-gap", "dpo", "gap", "reverse", "oppose", 1.0),
             PhaseInfo("po/dpo-style", "po", "dpo-style", "dpo", "style", None, None, 0.0)]
    toward = toward_rows(summary, infos, {"nh": "neutral"}).set_index("phase")
    assert toward.stance.to_dict() == {"sft/nh": "neutral", "po/dpo-gap": "oppose", "po/dpo-style": "neutral"}
    assert toward.toward.to_dict() == {"sft/nh": "majority", "po/dpo-gap": "target", "po/dpo-style": "largest"}
    head = headline_metrics(toward.reset_index(), 0.58)
    assert head == {"sft/nh:neutral": {"drift": 0.1, "ci_lo": 0.05, "ci_hi": 0.15, "drift_time": 0.5},
                    "po/dpo-gap:oppose": {"drift": 0.3, "ci_lo": 0.25, "ci_hi": 0.35}, "judge_accuracy": 0.58}


def test_chains_put_preference_runs_after_the_sft_run_they_start_from():
    from valuedrift.reporting.figures import chains

    runs = ["po/dpo-gap", "po/simpo-gap", "sft/nh", "sft/sh"]
    assert chains(runs, "nh") == [("sft/nh", ["sft/nh", "po/dpo-gap", "po/simpo-gap"]), ("sft/sh", ["sft/sh"])]
    assert chains(["po/dpo-gap"], "nh") == [("preference optimisation", ["po/dpo-gap"])]


def test_preference_runs_continue_from_the_end_of_their_sft_run():
    from valuedrift.metrics.change import continue_chains

    d = pd.DataFrame([
        {"run": "sft/a", "step": 0, "split": "all", "stance": "support", "dv": 0.0, "dv_lo": 0.0, "dv_hi": 0.0},
        {"run": "sft/a", "step": 16, "split": "all", "stance": "support", "dv": 0.3, "dv_lo": 0.2, "dv_hi": 0.4},
        {"run": "po/dpo-x", "step": 0, "split": "all", "stance": "support", "dv": 0.0, "dv_lo": 0.0, "dv_hi": 0.0},
        {"run": "po/dpo-x", "step": 12, "split": "all", "stance": "support", "dv": -0.1, "dv_lo": -0.2, "dv_hi": 0.0},
    ])
    out = continue_chains(d, "a").set_index(["run", "step"])
    assert out.dv.to_dict() == pytest.approx({("sft/a", 0): 0, ("sft/a", 16): 0.3, ("po/dpo-x", 0): 0.3, ("po/dpo-x", 12): 0.2})
    assert out.at[("po/dpo-x", 12), "dv_lo"] == pytest.approx(0.1) and out.at[("po/dpo-x", 12), "dv_run"] == pytest.approx(-0.1)
