"""``preferences`` stage: generate the synthetic value-gap preference sets.

For each set in ``prepare_data.preference_sets`` writes ``processed/preferences/<name>.jsonl`` and its
measured value gap to ``processed/preferences/<name>.gap.json``. Targets ``reinforce``/``reverse`` are
resolved from the SFT checkpoint's measured stance profile (``runs/sft/<corpus>/trajectory.json``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from valuedrift.config import load_params
from valuedrift.data.bank import load_bank
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.preferences import generate_pairs, resolve_target, value_gap
from valuedrift.data.probes import QUESTIONS_FILE, load_questions
from valuedrift.data.schemas import write_json, write_jsonl
from valuedrift.train.tracing import StanceTracer

log = logging.getLogger(__name__)


def sft_profile(sft_run: Path) -> dict[str, float] | None:
    """The stance profile ("all" over dev probes) at the last checkpoint of the SFT run, if it exists."""
    traj = StanceTracer.load_trajectory(sft_run)
    if not traj["checkpoints"]:
        return None
    return StanceTracer.summary(traj["checkpoints"][-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift preferences", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--sft-run", default=None, help="default: runs/sft/<sft.corpus>")
    ap.add_argument("--out", default="processed")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    data = Path(a.data)
    questions = load_questions(data / QUESTIONS_FILE)
    bank = load_bank(data)
    profile = sft_profile(Path(a.sft_run or f"runs/sft/{params.sft.corpus}"))
    for i, (name, cfg) in enumerate(sorted(params.prepare_data.preference_sets.items())):
        target = resolve_target(cfg.target, profile)
        pairs = generate_pairs(cfg, questions, bank, params.seed + i, target)
        assert_no_leaks(pairs, questions, f"preference set {name}")
        write_jsonl(Path(a.out) / "preferences" / f"{name}.jsonl", pairs)
        gap = value_gap(pairs)
        write_json(Path(a.out) / "preferences" / f"{name}.gap.json",
                   {"target": target, "condition": cfg.target, "requested_gap": cfg.gap, "measured_gap": gap,
                    "pairs": len(pairs), "sft_profile": profile})
        log.info("preference set %s: target %s, %d pairs, measured gap %s", name, target, len(pairs), gap)
