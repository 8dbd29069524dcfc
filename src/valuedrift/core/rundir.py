"""The run-folder contract: every path under ``runs/`` is spelled here and nowhere else.

A traced training run (``runs/sft/<corpus>``, ``runs/po/<algorithm>-<set>``, a sweep trial, the sweep's
baseline) is a folder::

    <run>/
      fingerprint.json          the hash of the inputs that made it (a changed input restarts the run)
      trajectory.json           one record per scored checkpoint (the source of truth for drift)
      evals/step_000012.jsonl   per-probe stance distributions q(p) at step 12
      checkpoints/checkpoint-12 resume checkpoints (dropped when the run finishes)
      final/                    the final model and tokenizer (a LoRA run: the adapter merged in)
      adapter/                  a LoRA run's adapter alone (peft: adapter_config.json, adapter_model.safetensors)
      train_log.json            the trainer's log history (kept when the checkpoints are dropped)
      mlflow_run_id             the MLflow run this folder logs to (deleting it asks for a new run)
      mlflow_run.json           how that run was opened: name, experiment, tags, params, id per store
      seeds/<k>/                the same run with training seed k (every seed but the first of ``seeds``)

:class:`RunDir` names these paths and reads the small files; the modules that write them (the tracer,
the tracker, the run scaffold) go through it. It imports nothing else of valuedrift.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINGERPRINT_FILE = "fingerprint.json"
TRAJECTORY_FILE = "trajectory.json"
EVALS_DIR = "evals"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
ADAPTER_DIR = "adapter"
TRAIN_LOG_FILE = "train_log.json"
RUN_ID_FILE = "mlflow_run_id"
RUN_META_FILE = "mlflow_run.json"
SEEDS_DIR = "seeds"
# a run's quick judged route (eval.trace_judged) is a run folder of its own inside it: <run>/judged/
JUDGED_DIR = "judged"
# what a saved model folder (final/, a checkpoint) holds that marks it as one
MODEL_CONFIG = "config.json"
TRAINER_STATE = "trainer_state.json"

log = logging.getLogger(__name__)


def seed_run_name(name: str, seed: int, first_seed: int) -> str:
    """Run folder name of one training seed: ``<name>`` for the first seed, ``<name>/seeds/<seed>`` else.

    The first seed keeps the plain layout, so a single-seed study looks the same as a multi-seed one's
    first run; each further seed lives inside, so one DVC output per stage holds all of them.
    """
    return name if seed == first_seed else f"{name}/{SEEDS_DIR}/{seed}"


def _readable_json(path: Path) -> bool:
    """A file counts only if it is complete JSON (a kill can leave it half-written)."""
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, json.JSONDecodeError):
        return False


def _safetensors_complete(path: Path) -> bool:
    """A safetensors file is whole: its JSON header parses and the file is exactly as long as the tensors
    it declares (a full disk or a kill truncates it). Reads the header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return False
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        return size == 8 + n + max(ends, default=0)
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError):
        return False


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a resume checkpoint cannot be resumed from, or None: its trainer state must be complete JSON,
    it must hold model weights, every ``*.safetensors`` must be whole and every torch file (``*.pt``,
    ``*.bin``: zip archives) must have its central directory (both are written front to back, so a
    truncated file fails these). Cheap: no tensor is loaded."""
    if not _readable_json(ckpt / TRAINER_STATE):
        return f"{TRAINER_STATE} is missing or not complete JSON"
    files = [f for f in ckpt.iterdir() if f.is_file()]
    weights = [f for f in files if f.suffix == ".safetensors" or (f.suffix == ".bin" and f.name.startswith("pytorch_model"))]
    if not weights:
        return "no model weights (*.safetensors, pytorch_model*.bin)"
    for f in files:
        if f.suffix == ".safetensors" and not _safetensors_complete(f):
            return f"{f.name} is truncated or corrupt"
        if f.suffix in (".pt", ".bin", ".pth") and not zipfile.is_zipfile(f):
            return f"{f.name} is truncated or corrupt"
    return None


@dataclass(frozen=True)
class RunDir:
    """One run folder (see the module docstring for the layout)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def fingerprint_file(self) -> Path:
        return self.path / FINGERPRINT_FILE

    @property
    def trajectory_file(self) -> Path:
        return self.path / TRAJECTORY_FILE

    @property
    def evals(self) -> Path:
        return self.path / EVALS_DIR

    def eval_table(self, step: int) -> Path:
        """Per-probe stance table of the checkpoint at ``step``."""
        return self.evals / f"step_{step:06d}.jsonl"

    def eval_tables(self) -> list[Path]:
        """Every per-probe table on disk, in step order."""
        return sorted(self.evals.glob("step_*.jsonl"))

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def final(self) -> Path:
        return self.path / FINAL_DIR

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG_FILE

    @property
    def run_id_file(self) -> Path:
        return self.path / RUN_ID_FILE

    @property
    def run_meta_file(self) -> Path:
        return self.path / RUN_META_FILE

    def seed(self, seed: int, first_seed: int) -> RunDir:
        """The folder of training seed ``seed`` of this run."""
        return RunDir(self.path.parent / seed_run_name(self.path.name, seed, first_seed))

    # -- reading ---------------------------------------------------------------------------------------
    def trajectory(self) -> dict[str, Any]:
        """The trajectory record; ``{"checkpoints": []}`` when nothing was scored yet."""
        if self.trajectory_file.exists():
            return json.loads(self.trajectory_file.read_text())
        return {"checkpoints": []}

    def checkpoint_records(self) -> list[dict[str, Any]]:
        return self.trajectory()["checkpoints"]

    def stored_fingerprint(self) -> str | None:
        if not self.fingerprint_file.exists():
            return None
        return json.loads(self.fingerprint_file.read_text()).get("fingerprint")

    def write_fingerprint(self, fp: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.fingerprint_file.write_text(json.dumps({"fingerprint": fp}) + "\n")

    def run_id(self) -> str | None:
        """The MLflow run id this folder last logged to, if any."""
        return self.run_id_file.read_text().strip() or None if self.run_id_file.exists() else None

    def run_meta(self) -> dict[str, Any] | None:
        """How this folder's MLflow run was opened (name, experiment, tags, params), if recorded."""
        return json.loads(self.run_meta_file.read_text()) if self.run_meta_file.exists() else None

    def forget_mlflow_run(self) -> None:
        """Drop the MLflow identity, so the next tracked run opens a new MLflow run."""
        for f in (self.run_id_file, self.run_meta_file):
            f.unlink(missing_ok=True)

    def has_final_model(self) -> bool:
        return (self.final / MODEL_CONFIG).exists()

    def complete(self, max_steps: int) -> bool:
        """Finished: the final model is saved and the trajectory ends with a phase evaluation at ``max_steps``."""
        if not self.has_final_model():
            return False
        ckpts = self.checkpoint_records()
        return bool(ckpts) and ckpts[-1]["step"] == max_steps and ckpts[-1]["phase"]

    def last_checkpoint(self) -> Path | None:
        """The newest resume checkpoint that can be resumed from (:func:`checkpoint_problem`), else None.
        Each newer one that cannot (half-written by a kill or a full disk, or corrupted) is skipped with a
        warning; when none can, the warning says that the run starts again from step 0."""
        ckpts = sorted(
            (p for p in self.checkpoints.glob("checkpoint-*") if p.name.split("-")[1].isdigit()),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for c in reversed(ckpts):
            problem = checkpoint_problem(c)
            if problem is None:
                return c
            log.warning("skipping resume checkpoint %s: %s", c, problem)
        if ckpts:
            log.warning("no usable resume checkpoint in %s: training starts again from step 0", self.checkpoints)
        return None

    # -- changing --------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the folder for a fresh run, keeping the other seeds' runs (they have fingerprints of their own)."""
        if not self.path.exists():
            return
        for child in self.path.iterdir():
            if child.name != SEEDS_DIR:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def drop_checkpoints(self) -> None:
        """Delete the resume checkpoints (GBs of optimizer state that DVC would otherwise cache)."""
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def seed_from(self, source: RunDir, fp: str) -> None:
        """Start this (new) folder from ``source``'s trajectory and per-probe tables under fingerprint
        ``fp``, so that a run made here finds those checkpoints already scored (a sweep trial starts from
        the study's baseline evaluation this way)."""
        self.path.mkdir(parents=True)
        self.write_fingerprint(fp)
        shutil.copy(source.trajectory_file, self.trajectory_file)
        self.evals.mkdir()
        for f in source.eval_tables():
            shutil.copy(f, self.eval_table(int(f.stem.split("_")[1])))

    def model_folders(self) -> Iterator[Path]:
        """Folders under this run that hold model weights (final/, checkpoints/, any saved model)."""
        for d in sorted(self.path.rglob("*"), reverse=True):
            if d.is_dir() and (d.name in (FINAL_DIR, CHECKPOINTS_DIR) or (d / "model.safetensors").exists()):
                yield d


def discover(root: Path) -> list[tuple[str, int | None, RunDir]]:
    """Every traced run under ``root`` (``runs/``): ``(phase, seed, run)`` with phase ``<kind>/<name>``
    and seed None for the plain folder (the first seed) or the ``seeds/<k>`` number."""
    found: list[tuple[str, int | None, RunDir]] = []
    for traj in Path(root).glob(f"*/*/{TRAJECTORY_FILE}"):
        if traj.parent.name == JUDGED_DIR:  # runs/base/judged: the base model's judged evaluation, not a run
            continue
        found.append((f"{traj.parent.parent.name}/{traj.parent.name}", None, RunDir(traj.parent)))
    for traj in Path(root).glob(f"*/*/{SEEDS_DIR}/*/{TRAJECTORY_FILE}"):
        d = traj.parent
        if d.name.isdigit():
            found.append((f"{d.parent.parent.parent.name}/{d.parent.parent.name}", int(d.name), RunDir(d)))
    return found
