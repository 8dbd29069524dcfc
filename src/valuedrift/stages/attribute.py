"""``attribute`` stage: which training examples drove the drift of each stance (TracIn-CP).

For a finished traced run (``--run runs/sft/<corpus>`` or ``runs/po/<algorithm>-<set>``; default: every entry
of ``attribute.runs``) every training example z gets, for each stance s and probe split,

    influence(z, s, split) = −(m(z)/N) Σ_c η_c ⟨∇L(z; θ_c), ∇R_{s,split}(θ_c)⟩

over the checkpoints c (the start model and final/), with R_{s,split} = mean likelihood-route q(p)[s] over
``attribute.probes_per_topic`` probes per topic, L the run's own loss (SFT NLL or sigmoid DPO), gradients in
the last ``attribute.last_blocks`` blocks (docs/definitions.md "Drift attribution"). Writes
``metrics/attribution/<kind>/<name>/`` (influence.csv, top_k.json, by_label.csv, summary.json, two PNGs)
and logs them to the run's MLflow run (``--no-mlflow`` to skip).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from valuedrift.algorithms.registry import ALGORITHMS, algorithm_hparams
from valuedrift.attribution.losses import check_supported
from valuedrift.attribution.pipeline import Settings, attribute_run, log_to_run
from valuedrift.attribution.runs import RunInfo, resolve_run
from valuedrift.config.schema.params import Params
from valuedrift.core import paths
from valuedrift.core.errors import ConfigError
from valuedrift.stages.args import check_flags, check_path, parse, stage_parser
from valuedrift.train.po import po_inputs
from valuedrift.train.scaffold import per_seed, run_fingerprint, run_inputs

log = logging.getLogger(__name__)

OUT = paths.ATTRIBUTION


def settings(params: Params, info: RunInfo) -> Settings:
    """The params one run's attribution reads (its training section's max_length and learning rate)."""
    train = params.sft if info.kind == "sft" else params.po
    hparams = algorithm_hparams(params.po.hparams, info.algorithm) if info.kind == "po" else {}
    return Settings(params.attribute, params.eval, params.model, train.max_length, train.learning_rate, params.probe_seed, hparams)


def check_fingerprint(params: Params, info: RunInfo) -> None:
    """Warn when the run folder was made by other inputs than the ones attributed with (params, data, start
    model): then the losses and checkpoints below do not describe how it was trained."""
    seed = info.seed if info.seed is not None else params.seeds[0]
    seeded = per_seed(params)
    params = next((p for p in seeded if p.seed == seed), dataclasses.replace(seeded[0], seed=seed))
    if info.kind == "sft":
        inputs = run_inputs(params, "sft")
    else:
        inputs = po_inputs(params, info.algorithm, algorithm_hparams(params.po.hparams, info.algorithm))
    if info.run.stored_fingerprint() != run_fingerprint(params, inputs, info.data_file, info.start_model):
        log.warning("%s was trained from other inputs (params, data file or start-model path) than %s, %s and these params: "
                    "the attribution assumes they are the same", info.run.path, info.data_file, info.start_model)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("attribute", __doc__, "processed", "base-model", "sft-runs", "data", raw_doc=True)
    ap.add_argument("--run", action="append", default=None,
                    help="a run folder (repeatable; default: runs/<entry> for each entry of attribute.runs)")
    ap.add_argument("--start-model", default=None, help="the run's start model (default: models/base for sft, the recorded SFT model for po)")
    ap.add_argument("--out", default=None, help=f"output folder (default: {OUT}/<kind>/<name>; with several runs, <out>/<kind>/<name>)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log to the run's MLflow run")
    a, params = parse(ap, argv)
    check_flags(a, {"processed": "dir", "base-model": "dir", "data": "dir"})
    check_path("sft-runs", a.sft_runs, "dir", must_exist=False)  # read for a po run's start model only
    check_path("start-model", a.start_model, "dir")
    check_path("out", a.out, "dir", must_exist=False)
    runs = a.run or [str(paths.RUNS / r) for r in params.attribute.runs]
    for r in runs:
        check_path("run", r, "dir")
    if a.start_model is not None and len(runs) > 1:
        raise ConfigError("--start-model", "give one --run with --start-model (each run has its own start model)")
    for r in runs:
        info = resolve_run(Path(r), Path(a.processed), Path(a.base_model), Path(a.sft_runs), params.po.start_from,
                           params.seeds[0], list(ALGORITHMS), Path(a.start_model) if a.start_model else None)
        cfg = settings(params, info)
        check_supported(info.algorithm, cfg.hparams)
        check_fingerprint(params, info)
        out = Path(a.out) if a.out and len(runs) == 1 else Path(a.out or OUT) / info.label
        _, frame = attribute_run(info, cfg, Path(a.data), out)
        if not a.no_mlflow:
            log_to_run(params.tracking, info.run, out, frame)
