"""Drift attribution of one traced run, end to end: examples, checkpoints, TracIn-CP, files, MLflow.

Writes into ``out`` (``metrics/attribution/<kind>/<name>/``):

- ``influence.csv``: one row per distinct training example (``example_id`` = the row's ``source_id`` for
  SFT, ``pair<row>`` for a preference pair), its labels, ``copies`` and influence(z, s, split) for every
  stance and split (``dev``, ``test``, ``all``);
- ``top_k.json``: the ``attribute.top_k`` examples toward and away from each (split, stance);
- ``by_label.csv``: mean influence per example label and readout stance (95% CI);
- ``summary.json``: settings, checkpoints with η_c, R at each checkpoint, measured change vs Σ influence;
- ``influence_by_label.png``, ``top_k.png``.

and logs them to the run's own MLflow run (``<run>/mlflow_run_id``) under ``attribution/`` — the table as an
MLflow table, the figures and files as artifacts — without writing into the run folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.attribution.figures import plot_by_label, plot_top_k
from valuedrift.attribution.losses import check_supported, make_loss
from valuedrift.attribution.readout import ReadoutSpec
from valuedrift.attribution.runs import Examples, RunInfo, checkpoints, load_examples
from valuedrift.attribution.tables import by_label, influence_frame, readout_splits, summary, top_k
from valuedrift.attribution.tracin import tracin
from valuedrift.config.schema.attribution import AttributeConfig
from valuedrift.config.schema.evaluation import EvalConfig
from valuedrift.config.schema.models import ModelConfig, TrackingConfig
from valuedrift.core.io import write_json
from valuedrift.core.rundir import RunDir
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.models import load_configured, load_tokenizer
from valuedrift.tracking import Tracker

log = logging.getLogger(__name__)

ARTIFACT_DIR = "attribution"


@dataclass
class Settings:
    """What one attribution reads besides the run: ``attribute``, ``eval`` (readout), ``model`` (loading),
    the run's ``max_length`` and learning rate (``sft`` or ``po``), the DPO hyperparameters, the probe seed."""

    attribute: AttributeConfig
    eval: EvalConfig
    model: ModelConfig
    max_length: int
    learning_rate: float
    probe_seed: int
    hparams: dict[str, Any]


def attribute_run(info: RunInfo, cfg: Settings, data_dir: Path, out: Path, progress: bool = True) -> tuple[dict[str, Any], Any]:
    """Score every training example of ``info``'s run; write the files into ``out``; return the summary and
    the per-example table."""
    check_supported(info.algorithm, cfg.hparams)
    t0 = time.perf_counter()
    examples = load_examples(info)
    tokenizer = load_tokenizer(info.start_model, cfg.model.trust_remote_code)
    loss = make_loss(info.algorithm, tokenizer, examples.rows, cfg.max_length, cfg.hparams)
    probes = select_probes(load_probe_bank(data_dir), cfg.attribute.probes_per_topic, cfg.eval.splits, cfg.probe_seed)
    spec = ReadoutSpec(cfg.eval.temperature, cfg.eval.batch_size, cfg.eval.prompt_format, cfg.eval.system_prompt)
    ckpts = checkpoints(info, cfg.learning_rate)
    log.info("attributing %s: %d examples (%d rows), %d probes, checkpoints at steps %s", info.label, len(examples.rows),
             examples.n_rows, len(probes), [c.step for c in ckpts])
    inf = tracin(lambda p: load_configured(p, cfg.model), tokenizer, ckpts, loss, examples.copies, examples.n_rows, probes,
                 spec, cfg.attribute.last_blocks, cfg.attribute.projection_dim, cfg.probe_seed, progress,
                 cfg.attribute.batch_size)
    frame = influence_frame(inf, examples)
    settings = {"last_blocks": cfg.attribute.last_blocks, "projection_dim": cfg.attribute.projection_dim,
                "probes_per_topic": cfg.attribute.probes_per_topic, "batch_size": cfg.attribute.batch_size, "start_model": str(info.start_model),
                "data_file": str(info.data_file)}
    result = summary(inf, frame, info.label, info.algorithm, settings)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_outputs(frame, examples, result, readout_splits(inf), cfg.attribute.top_k, out, info.label)
    log.info("attribution of %s: %d examples in %.0f s -> %s", info.label, len(frame), result["seconds"], out)
    return result, frame


def write_outputs(frame: Any, examples: Examples, result: dict[str, Any], splits: list[str], k: int, out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "influence.csv", index=False)
    by_label(frame).to_csv(out / "by_label.csv", index=False)
    write_json(out / "top_k.json", top_k(frame, examples, k))
    write_json(out / "summary.json", result)
    plot_by_label(frame, splits, out / "influence_by_label.png", f"{title}: mean influence of a training example on each stance")
    plot_top_k(frame, k, out / "top_k.png", f"{title}: top {k}")


OUTPUT_FILES = ("influence.csv", "by_label.csv", "top_k.json", "summary.json", "influence_by_label.png", "top_k.png")


def log_to_run(tracking: TrackingConfig, run: RunDir, out: Path, frame: Any) -> str | None:
    """Log ``out``'s files (and ``frame`` as an MLflow table) to the run's own MLflow run, resumed from a copy
    of its bookkeeping so that the run folder (another stage's output) is not written; a store that does not
    know the run gets a new run ``attribute-<kind>-<name>``. Returns the run id, None if MLflow failed."""
    with tempfile.TemporaryDirectory() as tmp:
        book = RunDir(Path(tmp))
        for src, dst in ((run.run_id_file, book.run_id_file), (run.run_meta_file, book.run_meta_file)):
            if src.exists():
                shutil.copy(src, dst)
        name = f"attribute-{run.path.parent.name}-{run.path.name}"
        tracker = Tracker(tracking, book.path)
        with tracker.run(name, {"attribution": "true"}):
            if not tracker.resumed:
                log.warning("the MLflow run of %s is not in this store: logging the attribution to a new run %s", run.path, name)
                tracker.set_tags({"stage": "attribute", "attribution.of": str(run.path)})
            tracker.log_table(frame, f"{ARTIFACT_DIR}/influence.json")
            for f in OUTPUT_FILES:
                tracker.log_artifact(out / f, ARTIFACT_DIR)
        return tracker.run_id if tracker.failed is None else None
