"""``po`` stage: preference optimisation from the SFT checkpoint, one algorithm × one preference set.

Each training seed of ``seeds`` starts from the same seed's SFT run (:mod:`valuedrift.train.po`).
"""

from __future__ import annotations

from pathlib import Path

from valuedrift.algorithms.registry import ALGORITHMS
from valuedrift.core.errors import ConfigError
from valuedrift.core.paths import PO_RUNS
from valuedrift.stages.args import check_flags, check_model_path, parse, stage_parser
from valuedrift.train.po import run_po, sft_final
from valuedrift.train.scaffold import per_seed


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("po", __doc__, "sft-runs", "processed", "data")
    ap.add_argument("--algorithm", required=True, help=f"one of {', '.join(ALGORITHMS)}")
    ap.add_argument("--preference-set", required=True, help="a set of prepare_data.preference_sets")
    ap.add_argument("--sft-model", default=None, help="one start model for every seed (default: each seed's SFT run)")
    ap.add_argument("--out", default=str(PO_RUNS), help=f"run folders (default: {PO_RUNS})")
    a, params = parse(ap, argv)
    check_model_path("sft-model", a.sft_model)
    check_flags(a, {"processed": "dir", "data": "dir", **({} if a.sft_model else {"sft-runs": "dir"})}, ["out"])
    if a.algorithm not in ALGORITHMS:
        raise ConfigError("--algorithm", f"unknown algorithm {a.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    for p in per_seed(params):  # `seeds` repeats the run, each from the same seed's SFT checkpoint
        sft_model = Path(a.sft_model) if a.sft_model else sft_final(p, Path(a.sft_runs))
        run_po(p, sft_model, Path(a.processed), Path(a.out), a.algorithm, a.preference_set, data_dir=Path(a.data))
