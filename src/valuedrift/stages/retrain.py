"""``retrain`` stage: ``counterfactual.run`` trained again, with its own params, on one variant of its data.

    valuedrift retrain [--variant top|random_<d>] [--variants counterfactual/data] [--out counterfactual/runs]

The variant's data is ``<data>/<variant>/`` (``valuedrift counterfactual-data``); the run goes to
``<out>/<variant>/<kind>/<name>`` and is traced exactly as the original (same params, start model, step 0,
probes), as the MLflow run ``<name>-<variant>`` tagged ``counterfactual: <variant>``. Only the first
training seed is retrained. Without ``--variant``, every variant in turn (``top``, ``random_0`` …
``random_<counterfactual.draws − 1>``); an interrupted retraining resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

from valuedrift.attribution.counterfactual import counterfactual_run, variants
from valuedrift.core import paths
from valuedrift.core.errors import ConfigError
from valuedrift.stages.args import check_flags, check_path, parse, stage_parser
from valuedrift.train.po import run_po
from valuedrift.train.scaffold import per_seed
from valuedrift.train.sft import run_sft

log = logging.getLogger(__name__)

DATA = paths.COUNTERFACTUAL / "data"
OUT = paths.COUNTERFACTUAL / "runs"


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("retrain", __doc__, "runs", "processed", "base-model", "sft-runs", "data", raw_doc=True)
    ap.add_argument("--variant", default=None, help="top or random_<d> (d < counterfactual.draws); default: each in turn")
    ap.add_argument("--variants", default=str(DATA), help=f"the variants' data folders (default: {DATA})")
    ap.add_argument("--base-eval", default=str(paths.BASE_EVAL), help=f"the start model's evaluation, step 0 of an sft run (default: {paths.BASE_EVAL})")
    ap.add_argument("--out", default=str(OUT), help=f"run folders (default: {OUT})")
    a, params = parse(ap, argv)
    check_flags(a, {"runs": "dir", "processed": "dir", "base-model": "dir", "data": "dir", "variants": "dir"}, ["out"])
    check_path("sft-runs", a.sft_runs, "dir", must_exist=False)  # a po run's start model, if its tags do not record it
    check_path("base-eval", a.base_eval, "dir", must_exist=False)
    known = variants(params.counterfactual.draws)
    if a.variant is not None and a.variant not in known:
        raise ConfigError("--variant", f"{a.variant!r} is not a variant of counterfactual.draws = {params.counterfactual.draws} "
                                       f"({', '.join(known)})")
    chosen = [a.variant] if a.variant else known
    for variant in chosen:
        if not (Path(a.variants) / variant).is_dir():
            raise ConfigError("--variants", f"{Path(a.variants) / variant}: no such folder (run `valuedrift counterfactual-data` first)")
    info = counterfactual_run(params, Path(a.runs), Path(a.processed), Path(a.base_model), Path(a.sft_runs))
    params = per_seed(params)[0]  # the first training seed's run (the plain run folder)
    base_eval = Path(a.base_eval) if Path(a.base_eval).is_dir() else None
    for variant in chosen:
        data, out = Path(a.variants) / variant, Path(a.out) / variant / info.kind
        log.info("retraining %s without the examples of variant %s", info.label, variant)
        if info.kind == "sft":
            run_sft(params, Path(a.base_model), data, out, info.name, data_dir=Path(a.data), start_eval=base_eval, variant=variant)
        else:
            run_po(params, info.start_model, data, out, info.algorithm, info.data_file.stem, data_dir=Path(a.data), variant=variant)
