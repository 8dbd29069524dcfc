"""``preferences`` stage: generate the synthetic value-gap preference sets (or read a set from a dataset,
``generator: source``) and analyse their gap.

For each set in ``prepare_data.preference_sets`` (or only those named with ``--set``) writes, under
``processed/preferences/``:

- ``<name>.jsonl``: the pairs (prompt/chosen/rejected + the generator's stance and style labels);
- ``<name>.gap.json|csv|png``: the value-gap analysis (value_gap.py) with the set's generator parameters,
  resolved target and the SFT profile it was resolved from;
- ``<name>.answers.jsonl`` (LM backends only): every generated answer with its judged stance and whether
  it was kept.

Targets ``reinforce``/``reverse`` are resolved from the SFT checkpoint's measured stance profile
(``runs/sft/<po.start_from>/trajectory.json``, last checkpoint: the run preference training starts
from). Every set is checked (target, topics, generator settings) before any is generated; a bad value
fails naming its key.

A set with ``generator: source`` is read from its dataset (data/sources.py; UltraFeedback binarized,
HH-RLHF or a prompt/chosen/rejected JSON-Lines file). Real data has no stance labels, so its gap analysis
labels both answers with the judge ``source.judge`` (default ``eval.paper.judge``); its gap json adds
``source`` (kind, path, revision, split, counts) and ``digest`` (the MLflow dataset digest of the pairs,
the one the po run logs as its input).
"""

from __future__ import annotations

import logging
from pathlib import Path

from valuedrift.core.paths import PREFERENCES_DIR, SFT_RUNS
from valuedrift.data.bank import load_bank
from valuedrift.data.probes import load_probe_bank
from valuedrift.generation.preference_sets import build_set, plan_sets, sft_profile
from valuedrift.stages.args import check_flags, check_path, parse, stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("preferences", __doc__, "data", raw_doc=True)
    ap.add_argument("--set", action="append", dest="sets", metavar="NAME",
                    help="generate only this preference set (repeatable; default: all)")
    ap.add_argument("--sft-run", default=None, help=f"default: {SFT_RUNS}/<po.start_from>")
    ap.add_argument("--out", default="processed", help="where processed/preferences/ is written (default: processed)")
    a, params = parse(ap, argv)
    check_flags(a, {"data": "dir"}, ["out"])
    check_path("sft-run", a.sft_run, "dir", must_exist=False)  # a missing run: targets that need it say so
    data = Path(a.data)
    questions = load_probe_bank(data, annotated_only=False)  # every question; propositions where annotated
    bank = load_bank(data)
    profile = sft_profile(Path(a.sft_run) if a.sft_run else SFT_RUNS / params.po.start_from)
    plans = plan_sets(params.prepare_data.preference_sets, params.eval.judges, params.seed, a.sets, questions, bank, profile,
                      params.eval.paper.judge)
    out_dir = Path(a.out) / PREFERENCES_DIR
    for plan in plans:
        build_set(plan, params.eval, params.model, questions, bank, out_dir, profile)
