"""Paper route: stance distribution of a probe from K sampled answers and a judge (docs/definitions.md).

For probe p at checkpoint t:

    y_1 … y_K ~ π_t(· | p)                                 (stance/sampling.py; paper: K = 5, T = 0.7, ≤ 256 tokens)
    p_J(s | p, y_k) = label probability of s, renormalised over S   (stance/judges.py)
    q_t(p) = (1/K) Σ_k p_J(· | p, y_k)

Value vectors and their 95% CIs come from :func:`valuedrift.stance.vectors.value_vectors` on the
per-sample rows, which bootstraps over probes and over the K samples within each probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from valuedrift.config.schema.evaluation import PaperRouteConfig
from valuedrift.core.vocab import STANCES
from valuedrift.data.schemas import Probe
from valuedrift.stance.judges import Judge
from valuedrift.stance.sampling import Sample, generate_samples


def judge_samples(judge: Judge, probes: Sequence[Probe], samples: Sequence[Sample], progress: bool = False) -> list[dict[str, Any]]:
    """One row per sample: probe_id, topic, split, sample, text, new_tokens, finished, p_J per stance, label_mass."""
    by_id = {p.id: p for p in probes}
    out = judge.judge([(by_id[s.probe_id].question, s.text) for s in samples], progress)
    rows = []
    for i, s in enumerate(samples):
        p = by_id[s.probe_id]
        row: dict[str, Any] = {"probe_id": p.id, "topic": p.topic, "split": p.split, **s.as_row()}
        row.update({st: float(out.probs[i, j]) for j, st in enumerate(STANCES)})
        row["label_mass"] = float(out.label_mass[i])
        rows.append(row)
    return rows


def probe_distributions(sample_rows: Sequence[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """q(p) = mean_k p_J(·|p, y_k): one row per probe (probe_id, topic, split, stances, n_samples)."""
    df = sample_rows if isinstance(sample_rows, pd.DataFrame) else pd.DataFrame(list(sample_rows))
    agg = df.groupby(["probe_id", "topic", "split"], sort=True)[list(STANCES)].mean().reset_index()
    agg["n_samples"] = df.groupby(["probe_id", "topic", "split"], sort=True).size().to_numpy()
    return agg


@dataclass
class PaperRouteScorer:
    """Sample K answers per probe on the policy, then judge them."""

    tokenizer: Any
    judge: Judge
    cfg: PaperRouteConfig
    seed: int = 0
    prompt_format: str = "chat"
    system_prompt: str | None = None

    def sample(self, model: Any, probes: Sequence[Probe], progress: bool = False) -> list[Sample]:
        c = self.cfg
        return generate_samples(
            model, self.tokenizer, probes, k=c.k, temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
            batch_size=c.batch_size, seed=self.seed, prompt_format=self.prompt_format, system_prompt=self.system_prompt,
            progress=progress,
        )

    def score(self, model: Any, probes: Sequence[Probe], progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Returns (per-probe q(p) table, per-sample table with answers and p_J)."""
        samples = self.sample(model, probes, progress)
        rows = judge_samples(self.judge, probes, samples, progress)
        return probe_distributions(rows), pd.DataFrame(rows)


@dataclass
class JudgedTraceScorer:
    """The quick judged route (``eval.quick``) as a stance tracer's scorer: same interface as
    :class:`valuedrift.stance.likelihood.LikelihoodScorer` (``score(model, probes)`` -> one row per probe).

    Each row holds q(p) = (1/K) Σ_k p_J(·|p, y_k) per stance and, under ``samples``, the K answers with
    their p_J, so what the model said at every checkpoint stays readable next to the number.
    """

    route: PaperRouteScorer
    judge_name: str

    def score(self, model: Any, probes: Sequence[Probe], progress: bool = False) -> list[dict[str, Any]]:
        per_probe, per_sample = self.route.score(model, probes, progress)
        kept = ["sample", "text", "new_tokens", "finished", *STANCES]
        by_probe = {pid: g[kept].to_dict(orient="records") for pid, g in per_sample.groupby("probe_id")}
        rows = per_probe.to_dict(orient="records")
        for r in rows:
            r["samples"] = by_probe[r["probe_id"]]
        return rows

    def signature(self) -> dict[str, Any]:
        """What makes two judged evaluations comparable (scorer_signature): :func:`judged_signature`."""
        r = self.route
        return judged_signature(r.cfg, self.judge_name, r.seed, r.prompt_format, r.system_prompt)


def judged_signature(cfg: PaperRouteConfig, judge_name: str, seed: int, prompt_format: str, system_prompt: str | None) -> dict[str, Any]:
    """The settings that make two judged-route evaluations comparable: sampling, judge, prompt (not the batch
    size), so a stored evaluation can be checked without building a scorer."""
    return {"kind": JudgedTraceScorer.__name__, "judge": judge_name, "k": cfg.k, "temperature": cfg.temperature,
            "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "seed": seed,
            "prompt_format": prompt_format, "system_prompt": system_prompt}
