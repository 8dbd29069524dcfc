"""The report's "Attribution" section: which training examples drove each attributed run's drift (the
``attribute@<run>`` stages' outputs) and whether removing them mattered (the counterfactual subproject's
``counterfactual.json``). Pure text from those records; formulas in docs/definitions.md "Drift attribution"
and "Counterfactual retraining"."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from valuedrift.core.vocab import STANCES

TOP_SHOWN = 3  # examples quoted toward the drifted stance


def exponent(x: float) -> int:
    """The power of ten that puts ``x`` in [1, 10) (0 for 0 or NaN)."""
    return int(math.floor(math.log10(x))) if x > 0 and math.isfinite(x) else 0


def _ci(v: float, lo: float, hi: float) -> str:
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def run_lines(summary: dict[str, Any], by_label: pd.DataFrame, top: dict[str, Any], split: str = "all") -> list[str]:
    """One attributed run: size and cost, measured change vs the first-order sum per stance, mean influence
    by example label, and the examples that pushed the most-drifted stance furthest."""
    reads = summary["readouts"]
    changes = {s: reads[f"{split}/{s}"] for s in STANCES if f"{split}/{s}" in reads}
    drifted = max(changes, key=lambda s: abs(changes[s]["measured_change"]))
    lines = [f"### {summary['run']}", "",
             f"{summary['n_examples']} distinct examples ({summary['n_rows']} rows), readout on "
             + ", ".join(f"{n} {sp}" for sp, n in summary["probes"].items()) + " probes, gradients in "
             f"{summary['n_params']:,} parameters (last {summary['last_blocks']} block(s)"
             + (f", count-sketched to {summary['projection_dim']}" if summary.get("projection_dim") else "")
             + f"), checkpoints at steps {', '.join(str(c['step']) for c in summary['checkpoints'])}; {summary['seconds']:.0f} s.", "",
             "| readout (all probes) | measured change R(θ_T) − R(θ_0) | Σ influence (first order, plain SGD) |",
             "|---|---|---|"]
    lines += [f"| {s} | {c['measured_change']:+.4f} | {c['sum_of_influences']:+.2e} |" for s, c in changes.items()]
    lines += ["", "The sums are first-order plain-SGD predictions; AdamW rescales every step, so compare their signs "
              "and the ranking of examples, not their size.", "",
              "Mean influence of an example on each stance's readout, by its label (95% CI over examples):", "",
              "| label | n | " + " | ".join(f"toward {s}" for s in STANCES) + " |", "|---|---|" + "---|" * len(STANCES)]
    e = exponent(by_label["mean"].abs().max())
    for label, g in by_label.groupby("label", sort=False):
        cells = {r.stance: _ci(r.mean / 10**e, r.lo / 10**e, r.hi / 10**e) for r in g.itertuples()}
        lines.append(f"| {label} | {int(g.n.iloc[0])} | " + " | ".join(cells.get(s, "") for s in STANCES) + " |")
    up = changes[drifted]["measured_change"] >= 0
    lines += ["", f"(Influences in units of 10^{e}.)", "",
              f"The readout that moved most is **{drifted}** ({split} probes, {'up' if up else 'down'}); the examples that "
              f"pushed it {'up' if up else 'down'} the furthest:", ""]
    for x in top[split][drifted]["toward" if up else "away"][:TOP_SHOWN]:
        text = x["text"].replace("\n", " ").replace("|", "/")
        lines.append(f"- `{x['example_id']}` [{x.get('label')}, {x.get('topic')}, {x.get('style')}] "
                     f"{x['influence'] / 10**e:+.3f}×10^{e}: “{text}…”")
    return lines


def counterfactual_staleness(cf: dict[str, Any], summary: dict[str, Any] | None) -> list[str]:
    """A warning when the committed counterfactual was computed for another version of its run: the readout
    it selected on (``select_split``/``stance``) moved by ``cf["measured_change"]`` then and by something else in
    the run's current attribution ``summary`` (or the run is no longer attributed). Empty when they agree."""
    key = f"{cf['select_split']}/{cf['stance']}"
    now = (summary or {}).get("readouts", {}).get(key, {}).get("measured_change")
    if now is not None and abs(float(now) - float(cf["measured_change"])) <= 1e-9:
        return []
    seen = "is not attributed now" if now is None else f"moved {float(now):+.4f} in the current run"
    return [f"**Stale:** this counterfactual was computed for an earlier version of `{cf['run']}` (its {key} readout "
            f"moved {cf['measured_change']:+.4f} then and {seen}); rerun it with `make counterfactual`. "
            "The table below describes that earlier run.", ""]


BASELINE_WORDS = {"label_matched": "as many of each label as the top k hold", "uniform": "drawn from all examples"}


def counterfactual_lines(cf: dict[str, Any], summary: dict[str, Any] | None) -> list[str]:
    """The counterfactual retraining: drift of s* after each removal, with CIs, and the verdict per route and split
    (headed by a warning when ``summary``, the run's current attribution, shows it is stale)."""
    s = cf["stance"]
    lines = ["### Counterfactual retraining", "", *counterfactual_staleness(cf, summary),
             f"`{cf['run']}` retrained with its own params (1 training seed each) without the top {cf['k']} of its "
             f"{cf['examples']} distinct examples by influence in the direction its **{s}** readout moved "
             f"({cf['select_split']} probes: {cf['measured_change']:+.4f}), and without {cf['k']} random examples "
             f"({BASELINE_WORDS[cf.get('baseline', 'uniform')]}, {cf['draws']} draws). Removed labels — top: "
             + ", ".join(f"{k} {v}" for k, v in cf["removed_labels"]["top"].items())
             + "; first random draw: " + ", ".join(f"{k} {v}" for k, v in cf["removed_labels"]["random_0"].items()) + ".", "",
             f"Drift of {s} from the base model at the end of SFT (phase probes, 95% CI over probes; the random mean's "
             "interval is over draws):", "",
             "| route | split | full data | top-k removed | random removed (mean) | top − random | attribution useful? |",
             "|---|---|---|---|---|---|---|"]
    for route, r in cf["routes"].items():
        rows = pd.DataFrame(r["rows"])
        for split, v in r["verdicts"].items():
            g = rows[rows.split == split].set_index("variant")

            def cell(variant: str, g: pd.DataFrame = g) -> str:
                x = g.loc[variant]
                return _ci(x.value, x.lo, x.hi)

            verdict = "**yes**" if v["useful"] else ("no" + ("" if v["ci_excludes_0"] else " (CI includes 0)")
                                                  + ("" if v["top_below_every_draw"] else ", a random draw shrank it more"))
            lines.append(f"| {route} | {split} | {cell('full')} | {cell('top')} | {cell('random (mean)')} | "
                         f"{_ci(v['difference'], v['difference_lo'], v['difference_hi'])} | {verdict} |")
    direction = "up" if cf["sign"] > 0 else "down"
    lines += ["", f"Useful = the top-k removal left less drift {direction} (the direction the likelihood readout moved, "
              "used on both routes) than the mean random removal (paired CI over probes excluding 0), and less than every "
              "random draw.", ""]
    lik = cf["routes"].get("likelihood", {}).get("verdicts", {}).get("all")
    if lik:
        lines += [f"**Verdict** (likelihood route, the readout attribution ranks by; all probes): removing the top {cf['k']} "
                  f"examples changed the drift of {s} by {lik['difference']:+.3f} [{lik['difference_lo']:+.3f}, "
                  f"{lik['difference_hi']:+.3f}] relative to removing {cf['k']} random ones — "
                  + ("**clearly more than random removal**: attribution is useful here." if lik["useful"] else
                     "**not clearly more than random removal**: this run does not show that the attribution is useful."), ""]
    return lines
