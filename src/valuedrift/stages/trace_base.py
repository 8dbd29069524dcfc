"""``trace_base`` stage: score the start model once, on every route, for all SFT runs to share.

Every SFT run starts from the same weights (``models/base``), whatever its corpus or training seed, so its
step-0 evaluation would repeat the same numbers: this stage scores them once into ``runs/base/`` (the
likelihood route; the judged route in ``runs/base/judged/`` when ``eval.trace_judged``), and each SFT run
adopts that evaluation as its own step 0 (:meth:`valuedrift.train.scaffold.TracedRun.adopt_start`). An SFT
run whose scorer settings or probes differ from it scores step 0 itself.
"""

from __future__ import annotations

from pathlib import Path

from valuedrift.core.paths import BASE_EVAL
from valuedrift.stages.args import check_flags, parse, stage_parser
from valuedrift.train.scaffold import trace_start_model


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("trace-base", __doc__, "base-model", "data")
    ap.add_argument("--out", default=str(BASE_EVAL), help=f"run folder of the start model's evaluation (default: {BASE_EVAL})")
    ap.add_argument("--no-mlflow", action="store_true")
    a, params = parse(ap, argv)
    check_flags(a, {"base-model": "dir", "data": "dir"}, ["out"])
    run = trace_start_model(params, Path(a.base_model), Path(a.out), Path(a.data), tracked=not a.no_mlflow)
    print(f"start model scored on {', '.join(['likelihood'] + (['judged'] if params.eval.trace_judged else []))} -> {run.path}")
