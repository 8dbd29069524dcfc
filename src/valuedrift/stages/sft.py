"""``sft`` stage: supervised fine-tuning with stance tracing, one run per corpus and training seed.

``sft.corpora`` lists the corpora to train on (dvc.yaml runs one matrix entry per corpus with
``--corpus``; without ``--corpus`` this command trains them one after another). An interrupted run
resumes from its last checkpoint (:mod:`valuedrift.train.sft`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from valuedrift.core.errors import ConfigError
from valuedrift.core.paths import BASE_EVAL, SFT_RUNS
from valuedrift.stages.args import check_flags, parse, stage_parser
from valuedrift.train.scaffold import per_seed
from valuedrift.train.sft import run_sft

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("sft", __doc__, "base-model", "processed", "data")
    ap.add_argument("--corpus", default=None, help="one corpus of sft.corpora (default: each of them in turn)")
    ap.add_argument("--out", default=str(SFT_RUNS), help=f"run folders (default: {SFT_RUNS})")
    ap.add_argument("--base-eval", default=str(BASE_EVAL),
                    help=f"the start model's evaluation (trace_base), adopted as every run's step 0 (default: {BASE_EVAL})")
    a, params = parse(ap, argv)
    check_flags(a, {"base-model": "dir", "processed": "dir", "data": "dir"}, ["out"])
    base_eval = Path(a.base_eval) if Path(a.base_eval).is_dir() else None
    if base_eval is None:
        log.warning("no start-model evaluation at %s (stage trace_base, or --base-eval): each SFT run scores its own "
                    "step 0", a.base_eval)
    if a.corpus is not None and a.corpus not in params.sft.corpora:
        raise ConfigError("--corpus", f"{a.corpus!r} is not in sft.corpora ({', '.join(params.sft.corpora)})")
    for corpus in [a.corpus] if a.corpus else params.sft.corpora:
        for p in per_seed(params):  # `seeds` repeats the run; the first seed's run is the plain folder
            run_sft(p, Path(a.base_model), Path(a.processed), Path(a.out), corpus, data_dir=Path(a.data), start_eval=base_eval)
