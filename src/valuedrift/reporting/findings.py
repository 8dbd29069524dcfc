"""Tables, plots and verdicts for the report (pure functions over the drift stage's outputs).

Inputs: ``metrics/drift_summary.csv`` (one row per phase × split × topic × stance, aggregated over seeds),
the runs' trajectories, and the preference sets' ``<set>.gap.json`` (condition, target, gap).

The paper's three findings (docs/definitions.md) and the rules by which we call them (thresholds are ours, stated
in the report next to each verdict):

1. SFT sets values fast, and the data decides the direction — tested on each SFT corpus by (a) speed:
   drift time of the stance with the largest |M| ≤ 0.25 (the paper: most drift in the first ~10%),
   (b) direction: the corpus's majority stance gains the most, (c) size: SFT's largest |M| exceeds every
   preference run's on style-only data.
2. Preference optimisation on style-only data barely moves values — every style-only run's largest
   |M_s| < 0.05 (the paper: 0.01–0.27 on its 3B–8B models).
3. With a value gap, algorithms differ — on value-gap sets, the algorithms' drift toward the target
   stance separates: the largest and smallest have non-overlapping CIs (and the paper's order
   DPO > SimPO > reward-model RL ≈ 0 is checked where those algorithms ran).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.core.vocab import ALL, STANCES

FAST_DRIFT_TIME = 0.25
STYLE_ONLY_BARELY = 0.05


@dataclass(frozen=True)
class PhaseInfo:
    phase: str
    kind: str  # sft | po
    name: str
    algorithm: str | None = None
    pref_set: str | None = None
    condition: str | None = None
    target: str | None = None
    gap: float | None = None

    @property
    def style_only(self) -> bool:
        return self.kind == "po" and self.gap == 0

    @property
    def label(self) -> str:
        if self.kind == "sft":
            return f"SFT on {self.name}"
        cond = "style-only" if self.style_only else f"{self.condition} → {self.target}, gap {self.gap:g}"
        return f"{self.algorithm} on {self.pref_set} ({cond})"


def phase_info(phase: str, processed: Path, algorithms: list[str]) -> PhaseInfo:
    kind, name = phase.split("/", 1)
    if kind != "po":
        return PhaseInfo(phase, kind, name)
    algo = next((a for a in sorted(algorithms, key=len, reverse=True) if name.startswith(f"{a}-")), name.split("-")[0])
    pref = name[len(algo) + 1 :]
    gap_file = processed / "preferences" / f"{pref}.gap.json"
    meta = json.loads(gap_file.read_text()) if gap_file.exists() else {}
    return PhaseInfo(phase, kind, name, algo, pref, meta.get("condition"), meta.get("target"), meta.get("requested_gap"))


def fmt_ci(m: float, lo: float, hi: float) -> str:
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _rows(summary: pd.DataFrame, phase: str, split: str, topic: str = ALL) -> pd.DataFrame:
    return summary[(summary.phase == phase) & (summary.split == split) & (summary.topic == topic)].set_index("stance")


def drift_table(summary: pd.DataFrame, infos: list[PhaseInfo], splits: tuple[str, ...] = ("dev", "test")) -> pd.DataFrame:
    """One row per phase × split: M_s with CI for each stance, drift time per stance, seeds, probes."""
    out = []
    for info in infos:
        for split in splits:
            r = _rows(summary, info.phase, split)
            if r.empty or "magnitude" not in r:
                continue
            rec: dict[str, Any] = {"run": info.label, "split": split}
            for s in STANCES:
                rec[f"Δ{s}"] = fmt_ci(r.at[s, "magnitude"], r.at[s, "ci_lo"], r.at[s, "ci_hi"])
            for s in STANCES:
                rec[f"time {s}"] = f"{r.at[s, 'drift_time']:.2f}" if _time_resolved(r, s) else "n/r"
            rec["seeds"] = int(r.n_seeds.max())
            rec["probes"] = int(r.n_probes.max())
            out.append(rec)
    return pd.DataFrame(out)


def _time_resolved(r: pd.DataFrame, stance: str) -> bool:
    """Drift time is meaningful only where the trace probes resolve the drift (in most seeds)."""
    return "time_resolved_share" in r and float(r.at[stance, "time_resolved_share"]) >= 0.5


def _excludes_zero(r: pd.DataFrame, stance: str) -> bool:
    return float(r.at[stance, "ci_lo"]) > 0 or float(r.at[stance, "ci_hi"]) < 0


def largest_drift(summary: pd.DataFrame, phase: str, split: str = ALL) -> tuple[str, float]:
    r = _rows(summary, phase, split)
    s = max(STANCES, key=lambda s: abs(r.at[s, "magnitude"]))
    return s, float(r.at[s, "magnitude"])


@dataclass
class Verdict:
    finding: str
    paper: str
    verdict: str = "not tested"
    ours: list[str] = field(default_factory=list)
    rule: str = ""


def _combine(checks: list[bool]) -> str:
    if not checks:
        return "not tested"
    if all(checks):
        return "reproduced"
    return "partly reproduced" if any(checks) else "not reproduced"


def verdict_sft(summary: pd.DataFrame, infos: list[PhaseInfo], majority: dict[str, str]) -> Verdict:
    v = Verdict(
        "1. SFT establishes values, fast, and the SFT data decides which way",
        "most drift in the first ~10% of SFT steps; WildChat-like (neutral-heavy) data → neutral, "
        "Alpaca-like (support-heavy) → support",
        rule=f"per corpus: the largest-|M| stance's CI excludes 0, the trace probes resolve its drift and its drift time ≤ "
        f"{FAST_DRIFT_TIME}; the corpus's "
        "majority stance gains the most, with a CI above 0; SFT's largest |M| exceeds every style-only preference run's",
    )
    checks = []
    style_max = [abs(largest_drift(summary, i.phase)[1]) for i in infos if i.style_only]
    for info in (i for i in infos if i.kind == "sft"):
        s, m = largest_drift(summary, info.phase)
        r = _rows(summary, info.phase, ALL)
        t = float(r.at[s, "drift_time"])
        gains = {st: float(r.at[st, "magnitude"]) for st in STANCES}
        top = max(gains, key=gains.get)
        real = _excludes_zero(r, s)  # a drift time means nothing for a drift inside the noise
        resolved = _time_resolved(r, s)
        fast = real and resolved and t <= FAST_DRIFT_TIME
        direction = top == majority.get(info.name) and float(r.at[top, "ci_lo"]) > 0
        checks += [fast, direction]
        line = (f"{info.label}: largest drift {s} {fmt_ci(m, r.at[s, 'ci_lo'], r.at[s, 'ci_hi'])}"
                f"{'' if real else ' (CI includes 0)'}; drift time "
                f"{f'{t:.2f}' if resolved else 'not resolved (the trace probes CI at the extreme checkpoint contains the start)'}"
                f" ({'fast' if fast else 'speed not shown'}); "
                f"largest gain {top} {fmt_ci(gains[top], r.at[top, 'ci_lo'], r.at[top, 'ci_hi'])} vs the corpus's "
                f"majority stance {majority.get(info.name)}")
        if style_max:
            bigger = abs(m) > max(style_max)
            checks.append(bigger)
            line += f"; |M| {abs(m):.3f} vs style-only max {max(style_max):.3f}"
        v.ours.append(line + f" (seeds: {int(r.n_seeds.max())})")
    v.verdict = _combine(checks)
    return v


def verdict_style_only(summary: pd.DataFrame, infos: list[PhaseInfo]) -> Verdict:
    v = Verdict(
        "2. Preference optimisation on standard (style-only) data barely moves values",
        "|drift| 0.01–0.27 (3B–8B models, UltraFeedback / HH-RLHF)",
        rule=f"every style-only run's largest |M_s| (all probes) < {STYLE_ONLY_BARELY}",
    )
    checks = []
    for info in (i for i in infos if i.style_only):
        s, m = largest_drift(summary, info.phase)
        r = _rows(summary, info.phase, ALL)
        checks.append(abs(m) < STYLE_ONLY_BARELY)
        v.ours.append(f"{info.label}: largest |M| = {abs(m):.3f} ({s}), CI {fmt_ci(m, r.at[s, 'ci_lo'], r.at[s, 'ci_hi'])}, "
                      f"seeds {int(r.n_seeds.max())}")
    v.verdict = _combine(checks)
    return v


def verdict_value_gap(summary: pd.DataFrame, infos: list[PhaseInfo]) -> Verdict:
    v = Verdict(
        "3. With a value gap in the preference data, algorithms differ",
        "PPO ≈ 0 (KL-anchored); DPO large and asymmetric (0.53 reinforcing vs 0.46 reversing); SimPO ~0.15",
        rule="on each value-gap set: the largest and smallest drift toward the target stance have non-overlapping CIs; "
        "order DPO > SimPO > reward-model RL where present",
    )
    checks = []
    gap_runs = [i for i in infos if i.kind == "po" and not i.style_only and i.target]
    for pref in sorted({i.pref_set for i in gap_runs}):
        runs = [i for i in gap_runs if i.pref_set == pref]
        toward = {}
        for i in runs:
            r = _rows(summary, i.phase, ALL)
            toward[i.algorithm] = (float(r.at[i.target, "magnitude"]), float(r.at[i.target, "ci_lo"]), float(r.at[i.target, "ci_hi"]),
                                   int(r.n_seeds.max()))
        desc = ", ".join(f"{a} {fmt_ci(*t[:3])}" for a, t in sorted(toward.items(), key=lambda kv: -kv[1][0]))
        target = runs[0].target
        v.ours.append(f"{pref} (target {target}, {runs[0].condition}): drift toward target — {desc}; "
                      f"seeds {min(t[3] for t in toward.values())}")
        if len(toward) >= 2:
            hi_a = max(toward, key=lambda a: toward[a][0])
            lo_a = min(toward, key=lambda a: toward[a][0])
            checks.append(toward[lo_a][2] < toward[hi_a][1])
            order = [a for a in ("dpo", "simpo") if a in toward]
            if len(order) == 2:
                checks.append(toward["dpo"][0] > toward["simpo"][0])
            rl = [a for a in toward if a.startswith("rm_")]
            if rl:
                checks.append(all(toward[a][0] <= min(toward[b][0] for b in toward if not b.startswith("rm_")) for a in rl))
    v.verdict = _combine(checks)
    return v


def markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no runs)_"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Design targets of the default study (issue 15): what the default setup must make visible
# --------------------------------------------------------------------------------------------------

GAP_TARGET = 0.10  # value-gap DPO must move its target stance by at least this (dev and held-out test topics)


@dataclass(frozen=True)
class Target:
    target: str
    measured: str
    met: bool | None  # None = not tested (no run covers it)


def _cell(summary: pd.DataFrame, phase: str, split: str, stance: str) -> tuple[float, float, float] | None:
    r = _rows(summary, phase, split)
    if r.empty or stance not in r.index or "magnitude" not in r or r.at[stance, "magnitude"] != r.at[stance, "magnitude"]:
        return None
    return float(r.at[stance, "magnitude"]), float(r.at[stance, "ci_lo"]), float(r.at[stance, "ci_hi"])


def design_targets(summary: pd.DataFrame, infos: list[PhaseInfo], majority: dict[str, str], contrasts: pd.DataFrame | None) -> list[Target]:
    """The default study's targets, checked on ``summary`` (one route's drift summary; the report passes the
    route that tracks what the models say) and ``contrasts`` (final-profile differences between SFT corpora,
    :func:`valuedrift.metrics.summary.contrast_rows`, split "all"):

    1. each SFT corpus raises its own majority stance, CI above 0 (all probes);
    2. the SFT corpora's final profiles differ on each one's majority stance (CI of the difference excludes 0);
    3. SFT drift time is resolved (the start lies outside the CI of the extreme checkpoint) for the largest drift;
    4. value-gap DPO moves its target stance by ≥ GAP_TARGET with a CI excluding 0, on dev and on test topics;
    5. on the style-only set every algorithm's largest |drift| is smaller than its drift toward the target on a
       value-gap set.
    """
    out: list[Target] = []
    sft = [i for i in infos if i.kind == "sft"]
    for i in sft:
        maj = majority.get(i.name, "?")
        c = _cell(summary, i.phase, ALL, maj)
        out.append(Target(f"SFT on {i.name} raises its majority stance ({maj}), CI above 0",
                          "–" if c is None else f"{maj} {fmt_ci(*c)}", None if c is None else c[1] > 0))
    if contrasts is not None and not contrasts.empty and len(sft) >= 2:
        for r in contrasts[(contrasts.split == ALL) & (contrasts.topic == ALL)].itertuples(index=False):
            stances = {majority.get(r.a), majority.get(r.b)}
            if r.stance not in stances:
                continue
            out.append(Target(f"final profiles of SFT on {r.a} and {r.b} differ on {r.stance} (CI excludes 0)",
                              f"{r.b} − {r.a}: {fmt_ci(r.difference, r.ci_lo, r.ci_hi)}", r.ci_lo > 0 or r.ci_hi < 0))
    for i in sft:
        r = _rows(summary, i.phase, ALL)
        if r.empty or "magnitude" not in r:
            continue
        s, _ = largest_drift(summary, i.phase)
        resolved = _time_resolved(r, s)
        out.append(Target(f"SFT on {i.name}: drift time resolved (largest drift, {s})",
                          f"drift time {float(r.at[s, 'drift_time']):.2f}" if resolved else "not resolved", resolved))
    gap = [i for i in infos if i.kind == "po" and not i.style_only and i.target and i.algorithm == "dpo"]
    for i in gap:
        for split in ("dev", "test"):
            c = _cell(summary, i.phase, split, i.target)
            out.append(Target(f"DPO on {i.pref_set} moves {i.target} by ≥ {GAP_TARGET:.2f} on {split} topics, CI excluding 0",
                              "–" if c is None else fmt_ci(*c), None if c is None else c[0] >= GAP_TARGET and (c[1] > 0 or c[2] < 0)))
    style = {i.algorithm: i for i in infos if i.style_only}
    for algo, si in sorted(style.items()):
        gaps = [i for i in infos if i.kind == "po" and not i.style_only and i.target and i.algorithm == algo]
        if not gaps:
            continue
        s, m = largest_drift(summary, si.phase)
        toward = max(_cell(summary, g.phase, ALL, g.target)[0] for g in gaps)  # type: ignore[index]
        out.append(Target(f"{algo}: style-only largest absolute drift < its value-gap drift toward the target",
                          f"style-only {abs(m):.3f} ({s}) vs value-gap {toward:+.3f}", abs(m) < toward))
    return out


def targets_table(targets: list[Target]) -> pd.DataFrame:
    return pd.DataFrame([{"target": t.target, "measured (95% CI)": t.measured,
                          "met": "not tested" if t.met is None else ("yes" if t.met else "**no**")} for t in targets])


# --------------------------------------------------------------------------------------------------
# One number per run: the drift toward the stance the run is about (the bar plot, the headline metrics)
# --------------------------------------------------------------------------------------------------


def corpus_majority(corpora: Mapping[str, Any]) -> dict[str, str]:
    """Each authored corpus's majority stance (a corpus read from a dataset has no authored mix: absent)."""
    return {name: max(mix.mix, key=mix.mix.get) for name, mix in corpora.items() if mix.source is None}


def toward_rows(summary: pd.DataFrame, infos: list[PhaseInfo], majority: dict[str, str]) -> pd.DataFrame:
    """Per run, the drift of the stance it is about, on all probes: an SFT corpus's majority stance, a
    value-gap set's target, and for a style-only set (no target) the stance that moved most (``toward``
    says which)."""
    recs = []
    for i in infos:
        if i.kind == "sft":
            stance, toward = majority.get(i.name), "majority"
        elif not i.style_only and i.target:
            stance, toward = i.target, "target"
        else:
            stance, toward = (largest_drift(summary, i.phase)[0] if not _rows(summary, i.phase, ALL).empty else None), "largest"
        r = _rows(summary, i.phase, ALL)
        if stance is None or r.empty or stance not in r.index:
            continue
        recs.append({"run": i.label, "phase": i.phase, "stance": stance, "toward": toward,
                     "magnitude": float(r.at[stance, "magnitude"]), "ci_lo": float(r.at[stance, "ci_lo"]),
                     "ci_hi": float(r.at[stance, "ci_hi"]), "drift_time": float(r.at[stance, "drift_time"]),
                     "seeds": int(r.at[stance, "n_seeds"])})
    return pd.DataFrame(recs)


def headline_metrics(toward: pd.DataFrame, judge_accuracy: float | None) -> dict[str, Any]:
    """The few numbers ``dvc metrics show`` / ``dvc exp show`` lead with (metrics/headline.json): per SFT run
    its majority-stance drift with CI bounds and drift time, per value-gap run its target drift with CI
    bounds, and the judge's held-out accuracy. Keys name the run and the stance; values are numbers only."""
    out: dict[str, Any] = {}
    for r in toward.itertuples(index=False):
        if r.toward == "largest":
            continue  # style-only runs: in metrics/*/drift_summary.csv
        rec = {"drift": round(r.magnitude, 4), "ci_lo": round(r.ci_lo, 4), "ci_hi": round(r.ci_hi, 4)}
        if r.phase.startswith("sft/"):
            rec["drift_time"] = round(r.drift_time, 4)
        out[f"{r.phase}:{r.stance}"] = rec
    if judge_accuracy is not None:
        out["judge_accuracy"] = round(judge_accuracy, 4)
    return out
