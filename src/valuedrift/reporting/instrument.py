"""The route-validity study on the labelled real generations (``instrument`` stage; formulas in
:mod:`valuedrift.metrics.route_validity` and docs/definitions.md "Route validity").

Inputs: the labelled generations folder (hand labels, the key, ``likelihood.jsonl``: the likelihood route
on the same checkpoints and probes) and, per judge, its predictions on those answers (``judge_eval``'s
``predictions.jsonl``, rows of set ``generations``). The judged readouts compared with the likelihood
route are ``hand`` (the hand labels: what the model says) and every judge.

τ is fitted on the dev topics of the ``start`` checkpoint against the hand labels, held fixed, and judged
on the test topics of ``start`` and on every other checkpoint (held-out agreement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from valuedrift.core.io import iter_jsonl
from valuedrift.core.vocab import STANCES
from valuedrift.data.labelled_generations import load_labelled_generations
from valuedrift.metrics import route_validity as rv

HAND = "hand"


def load_likelihood(folder: Path) -> pd.DataFrame:
    """``likelihood.jsonl`` of the labelled generations: one row per (checkpoint, probe) with ℓ_s."""
    return pd.DataFrame([obj for _, obj in iter_jsonl(folder / "likelihood.jsonl")])


def judged_answers(folder: Path, predictions: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Per judged readout (``hand`` + each judge in ``predictions``), one row per answer with KEYS and the
    stance columns (one-hot hand labels, or the judge's p_J)."""
    rows = pd.DataFrame([g.as_row() for g in load_labelled_generations(folder)]).rename(columns={"id": "probe_id"})
    out = {HAND: rv.one_hot(rows)[rv.KEYS + ["aid", "flag", *STANCES]]}
    if predictions is not None and not predictions.empty:
        for name, p in predictions.groupby("judge", sort=True):
            merged = rows[rv.KEYS + ["aid", "flag"]].merge(p[["uid", *STANCES]].rename(columns={"uid": "aid"}), on="aid")
            out[str(name)] = merged
    return out


def readout_validity(lik: pd.DataFrame, answers: pd.DataFrame, tau: float, offsets: list[float], start: str,
                     n_boot: int, ci: float, seed: int) -> dict[str, Any]:
    """Agreement of the likelihood route (τ, b) with one judged readout, on every labelled checkpoint."""
    q_j = rv.judged_q(answers)
    pairs = rv.paired(rv.likelihood_q(lik, tau, offsets), q_j)
    checkpoints = sorted(pairs.checkpoint.unique(), key=lambda c: (c != start, c))
    out: dict[str, Any] = {"per_checkpoint": {}, "changes": {}}
    for c in checkpoints:
        g = pairs[pairs.checkpoint == c]
        prof = rv.profile_table(g)
        out["per_checkpoint"][c] = {
            "probe_r_support_minus_oppose": rv.probe_correlation(g, n_boot, ci, seed),
            "topic_profile_jsd_alignment": float(prof.jsd_alignment.mean()),
            "topic_argmax_agreement": float(prof.argmax_agree.mean()),
            "profile": {r: {s: float(g[f"{r}_{s}"].mean()) for s in STANCES} for r in "LJ"},
        }
    tables = []
    for c in checkpoints[1:]:
        by_topic = rv.change_table(pairs, start, c, "topic", n_boot, ci, seed)
        by_split = rv.change_table(pairs, start, c, "split", n_boot, ci, seed)
        out["changes"][c] = {"by_topic": rv.change_agreement(by_topic), "by_split": by_split.to_dict(orient="records")}
        tables.append(by_topic)
    out["change_rows"] = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return out


def temperature_fit(lik: pd.DataFrame, hand: pd.DataFrame, start: str) -> dict[str, Any]:
    """τ (and τ + offsets) fitted on ``start``'s dev topics against the hand labels; held-out agreement
    (mean per-probe 1 − JSD) on ``start``'s test topics and on the other checkpoints, before and after."""
    q_j = rv.judged_q(hand)
    fit_on = lik[(lik.checkpoint == start) & (lik.split == "dev")]
    held = {"start_test": lik[(lik.checkpoint == start) & (lik.split == "test")],
            "other_checkpoints": lik[lik.checkpoint != start]}
    fits = {"tau": rv.fit_temperature(fit_on, q_j), "tau_offsets": rv.fit_temperature(fit_on, q_j, offsets=True)}
    out: dict[str, Any] = {"fitted_on": f"{start}, dev topics, hand labels", "default": {"tau": 1.0, "offsets": [0.0, 0.0, 0.0]}}
    for name, f in [("default", out["default"]), *fits.items()]:
        entry = dict(f)
        entry["agreement"] = {part: rv.mean_alignment(d, q_j, f["tau"], f["offsets"]) for part, d in
                              [("fit", fit_on), *held.items()]}
        entry["cross_entropy_held_out"] = {part: rv.cross_entropy(d, q_j, f["tau"], f["offsets"]) for part, d in held.items()}
        out[name] = entry
    base = out["default"]["agreement"]
    out["improves_held_out"] = {name: all(out[name]["agreement"][p] > base[p] for p in held) for name in fits}
    # a fit at the τ bound is the degenerate one (q_L ≈ constant: ℓ told the fit nothing); adopting it would
    # erase every drift the route could show, so it is reported, never adopted
    out["adopt"] = {name: out["improves_held_out"][name] and not fits[name]["at_upper_bound"] for name in fits}
    return out


def study(folder: Path, predictions: pd.DataFrame | None, start: str, n_boot: int, ci: float, seed: int
          ) -> tuple[dict[str, Any], pd.DataFrame]:
    """The whole study: label summary, τ fit, and each readout's validity at τ = 1 and at the fitted τ.
    Returns (report dict, change rows of every readout)."""
    lik = load_likelihood(folder)
    readouts = judged_answers(folder, predictions)
    hand = readouts[HAND]
    report: dict[str, Any] = {
        "labelled": {"answers": len(hand), "checkpoints": sorted(hand.checkpoint.unique()),
                     "probes": int(hand.probe_id.nunique()), "flagged": float(hand.flag.notna().mean()),
                     "hand_profile": {c: {s: float(g[s].mean()) for s in STANCES} for c, g in hand.groupby("checkpoint")}},
        "tau_fit": temperature_fit(lik, hand, start),
        "readouts": {},
    }
    fit = report["tau_fit"]["tau"]
    changes = []
    for name, answers in readouts.items():
        entry = {}
        for label, tau, offsets in (("tau_1", 1.0, [0.0, 0.0, 0.0]), ("tau_fit", fit["tau"], fit["offsets"])):
            res = readout_validity(lik, answers, tau, offsets, start, n_boot, ci, seed)
            rows = res.pop("change_rows")
            if not rows.empty:
                changes.append(rows.assign(readout=name, tau=label))
            entry[label] = res
        report["readouts"][name] = entry
    return report, pd.concat(changes, ignore_index=True) if changes else pd.DataFrame()


# --------------------------------------------------------------------------------------------------
# The quick judged route at the phase ends of the pipeline's runs
# --------------------------------------------------------------------------------------------------


def phase_end_checkpoints(runs: Path, base_model: Path, start_from: str) -> dict[str, tuple[Path, Path, str]]:
    """Per first-seed run ``<kind>/<name>``: (its start checkpoint, its final checkpoint, start name).
    SFT runs start from ``base_model``; preference runs from ``runs/sft/<start_from>/final``."""
    from valuedrift.core.rundir import RunDir, discover

    out = {}
    for phase, seed, run in sorted(discover(runs), key=lambda t: t[0]):
        if seed is not None or not run.has_final_model():
            continue
        kind = phase.split("/")[0]
        start = (base_model, "base") if kind == "sft" else (RunDir(Path(runs) / "sft" / start_from).final, f"sft/{start_from}")
        out[phase] = (start[0], run.final, start[1])
    return out


def route_ends(run_path: Path, probe_ids: set[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run folder's per-probe rows (the likelihood route; ``<run>/judged`` the judged route) at its first and
    last traced checkpoint, on ``probe_ids``."""
    from valuedrift.core.rundir import RunDir

    tables = RunDir(run_path).eval_tables()
    first, last = (pd.DataFrame([o for _, o in iter_jsonl(t)]) for t in (tables[0], tables[-1]))
    return tuple(t[t.probe_id.isin(probe_ids)].sort_values("probe_id").reset_index(drop=True) for t in (first, last))  # type: ignore[return-value]


def phase_drift_rows(run: str, route: str, q0: pd.DataFrame, q1: pd.DataFrame, n_boot: int, ci: float, seed: int) -> list[dict[str, Any]]:
    """Drift per split (and all) and stance between two per-probe tables of the same probes (columns
    probe_id, topic, split, stances): :func:`valuedrift.metrics.summary.magnitude_rows` (paired bootstrap
    over probes), topic "all" rows, as {run, route, split, stance, drift, lo, hi, n_probes}."""
    from valuedrift.metrics.summary import magnitude_rows

    return [{"run": run, "route": route, "split": r["split"], "stance": r["stance"], "drift": r["magnitude"],
             "lo": r["magnitude_lo"], "hi": r["magnitude_hi"], "n_probes": r["n_probes"]}
            for r in magnitude_rows(q0, q1, 0, 1, n_boot, ci, seed) if r["topic"] == "all"]


# --------------------------------------------------------------------------------------------------
# The report's "Instrument" section
# --------------------------------------------------------------------------------------------------


def _ci(d: dict[str, float] | None) -> str:
    if not d or d.get("value") is None or d["value"] != d["value"]:
        return "–"
    return f"{d['value']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def judge_lines(je: dict[str, Any]) -> list[str]:
    """Judge accuracy on the held-out-topic generations and on the hand-written set, with CIs."""
    sets = [s for s in ("generations_test", "generations_test_unflagged", "labelled") if s in je.get("sets", {})]
    lines = ["| judge | set | n | accuracy | macro-F1 | κ |", "|---|---|---|---|---|---|"]
    for s in sets:
        base = je["sets"][s]["majority_baseline"]
        lines.append(f"| majority ({base['predict']}) | {s} | {je['sets'][s]['n']} | {_ci(base['accuracy'])} | {_ci(base['macro_f1'])} | {_ci(base['kappa'])} |")
        for name, per_set in je["judges"].items():
            r = per_set.get(s)
            if r:
                lines.append(f"| {name} | {s} | {je['sets'][s]['n']} | {_ci(r['accuracy'])} | {_ci(r['macro_f1'])} | {_ci(r['kappa'])} |")
    ip = je.get("inter_pass")
    if ip:
        lines += ["", f"Labeller reliability: a second, separate labelling pass over {ip['n']} random answers agrees with the "
                      f"first on {_ci(ip['raw_agreement'])} of them, κ = {_ci(ip['kappa'])}."]
    return lines


def validity_lines(rv_report: dict[str, Any]) -> list[str]:
    """Route agreement per readout (τ = 1) and the τ fit."""
    lines = ["| judged readout | checkpoint | probes | r(support − oppose) per probe | topic profile 1 − JSD | "
             "Δ sign agreement | Δ seen by likelihood route | r(Δ_L, Δ_J) | mean abs Δ (L / J) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in rv_report["readouts"].items():
        res = entry["tau_1"]
        for c, pc in res["per_checkpoint"].items():
            ch = res["changes"].get(c, {}).get("by_topic")
            tail = (f"{ch['sign_agreement']:.2f} | {ch['likelihood_sees']:.2f} of {ch['judged_significant']} | {ch['pearson']:.2f} | "
                    f"{ch['mean_abs_L']:.3f} / {ch['mean_abs_J']:.3f}") if ch else "(start) | | |"
            r = pc["probe_r_support_minus_oppose"]
            lines.append(f"| {name} | {c} | {r['n']} | {_ci(r)} | {pc['topic_profile_jsd_alignment']:.3f} | {tail} |")
    fit = rv_report["tau_fit"]
    lines += ["", f"τ fitted on {fit['fitted_on']} (mean per-probe 1 − JSD to the hand labels; higher is better):", "",
              "| likelihood route | τ | offsets (support, neutral, oppose) | fit set | base, test topics | other checkpoints | better on held-out? |",
              "|---|---|---|---|---|---|---|"]
    for name in ("default", "tau", "tau_offsets"):
        f = fit[name]
        better = "–" if name == "default" else ("yes" if fit["improves_held_out"][name] else "no") + (
            " (τ at its bound: ℓ uninformative; not adopted)" if f.get("at_upper_bound") else "")
        off = ", ".join(f"{o:+.2f}" for o in f["offsets"])
        ag = f["agreement"]
        lines.append(f"| {name} | {f['tau']:.3f} | {off} | {ag['fit']:.3f} | {ag['start_test']:.3f} | {ag['other_checkpoints']:.3f} | {better} |")
    return lines


def phase_end_lines(drift: pd.DataFrame) -> list[str]:
    lines = ["| run | route | split | Δ support | Δ neutral | Δ oppose | probes |", "|---|---|---|---|---|---|---|"]
    groups = sorted(drift.groupby(["run", "route", "split"], sort=True), key=lambda t: (not t[0][0].startswith("sft/"), t[0]))
    for (run, route, split), g in groups:  # SFT runs first: the order of training
        g = g.set_index("stance")
        cells = [f"{g.loc[s, 'drift']:+.3f} [{g.loc[s, 'lo']:+.3f}, {g.loc[s, 'hi']:+.3f}]" for s in STANCES]
        lines.append(f"| {run} | {route} | {split} | " + " | ".join(cells) + f" | {int(g.n_probes.iloc[0])} |")
    return lines


def fidelity_lines(fid: dict[str, Any]) -> list[str]:
    """What the quick route gives up: its judge on answer prefixes vs whole answers, against hand labels."""
    w, p = fid["whole_answer"], fid["prefix"]
    return [f"What the quick route gives up: on the {fid['n']} held-out-topic labelled answers, judge `{fid['judge']}` on the "
            f"first {fid['max_new_tokens']} tokens of each answer reaches macro-F1 {_ci(p['macro_f1'])} (accuracy {_ci(p['accuracy'])}) "
            f"against the hand labels of the whole answer, against {_ci(w['macro_f1'])} (accuracy {_ci(w['accuracy'])}) on the "
            "whole answer (≤ 128 tokens; the paper's 256 were not sampled on CPU)."]


def markdown_section(je: dict[str, Any] | None, rv_report: dict[str, Any] | None, drift: pd.DataFrame | None,
                     summary: dict[str, Any] | None, fidelity: dict[str, Any] | None, figures: list[str]) -> list[str]:
    """The report's "Instrument" section from the judge_eval and instrument stages' outputs (what exists)."""
    lines = ["## Instrument", "",
             "Does the stance instrument measure what the model *says*? Real answers of four checkpoints were "
             "labelled by reading them (data/AUTHORING.md, `labelled_generations`); the judges and the likelihood "
             "route are checked against those labels. Held-out topics (test split) never trained a judge.", ""]
    if je:
        lines += ["### Judge accuracy", "", *judge_lines(je), ""]
    if rv_report:
        lab = rv_report["labelled"]
        lines += ["### Route validity", "",
                  f"{lab['answers']} labelled answers on {lab['probes']} probes from checkpoints {', '.join(lab['checkpoints'])} "
                  f"({lab['flagged']:.0%} flagged off-topic or incoherent). Δ = change from `base` per (topic, stance) cell, "
                  "95% CI over probes; 'seen' = share of the cells where the judged Δ's CI excludes 0 in which the likelihood "
                  "route's Δ has the same sign and its CI excludes 0 too.", "", *validity_lines(rv_report), ""]
    if drift is not None and not drift.empty:
        secs = (summary or {}).get("quick_seconds_per_checkpoint", {})
        lines += ["### Quick judged route at the phase ends", "",
                  "Drift of every run from its start to its final checkpoint, on the trace probes, judged route "
                  "(`eval.quick`) next to the likelihood route on the same probes; one training seed, 95% CIs over probes "
                  "(paired). "
                  + ("Seconds per checkpoint, model loading included: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()) + "."
                     if secs else "Read from the runs' own judged traces (`eval.trace_judged`), not sampled again."),
                  "", *phase_end_lines(drift), ""]
    if fidelity:
        lines += [*fidelity_lines(fidelity), ""]
    lines += [f"![{f}]({f})" for f in figures]
    return lines
