"""What a traced run folder says about how it was trained: kind, algorithm, data, start model, checkpoints.

A run folder ``runs/<kind>/<name>[/seeds/<k>]`` (:mod:`valuedrift.core.rundir`): ``sft/<corpus>`` trained on
``processed/sft/<corpus>.jsonl`` from the base model; ``po/<algorithm>-<set>`` on
``processed/preferences/<set>.jsonl`` from the SFT checkpoint recorded in its MLflow tags (``sft_model``,
``mlflow_run.json``), else ``runs/sft/<po.start_from>/final``. The checkpoints are the start model (step 0),
any resume checkpoints still on disk and ``final/`` (step T: the last step of ``trajectory.json``).
The training examples are the data file's rows with identical rows merged (``copies`` counts them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.attribution.losses import check_supported
from valuedrift.attribution.tracin import Checkpoint, checkpoint_weights
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import read_records
from valuedrift.core.paths import corpus_file, preference_file
from valuedrift.core.rundir import MODEL_CONFIG, SEEDS_DIR, RunDir, seed_run_name


@dataclass(frozen=True)
class RunInfo:
    """A traced run as attribution needs it."""

    run: RunDir
    kind: str  # sft | po
    name: str  # <corpus> | <algorithm>-<set>
    algorithm: str  # sft | a po registry name
    data_file: Path
    start_model: Path
    seed: int | None  # the seeds/<k> folder's k, None for the plain folder

    @property
    def label(self) -> str:
        """``<kind>/<name>`` (``/seeds/<k>`` for a further seed)."""
        return f"{self.kind}/{self.name}" + (f"/{SEEDS_DIR}/{self.seed}" if self.seed is not None else "")


def _kind_name(path: Path) -> tuple[str, str, int | None]:
    parts = path.resolve().parts
    if len(parts) >= 4 and parts[-2] == SEEDS_DIR and parts[-1].isdigit():
        return parts[-4], parts[-3], int(parts[-1])
    return parts[-2], parts[-1], None


def _split_po_name(name: str, algorithms: list[str]) -> tuple[str, str]:
    for algo in sorted(algorithms, key=len, reverse=True):
        if name.startswith(f"{algo}-"):
            return algo, name[len(algo) + 1 :]
    raise ConfigError("--run", f"cannot tell the algorithm of po run {name!r} (expected <algorithm>-<set>, algorithms: {', '.join(algorithms)})")


def resolve_run(path: Path, processed: Path, base_model: Path, sft_runs: Path, start_from: str, first_seed: int,
                algorithms: list[str], start_model: Path | None = None) -> RunInfo:
    """The :class:`RunInfo` of run folder ``path``; ``start_model`` overrides the recorded start model."""
    run = RunDir(path)
    if not run.trajectory_file.exists() or not run.has_final_model():
        raise ConfigError("--run", f"{path}: not a finished traced run (needs {run.trajectory_file.name} and final/{MODEL_CONFIG})")
    kind, name, seed = _kind_name(run.path)
    tags = (run.run_meta() or {}).get("tags", {})
    if kind == "sft":
        algorithm, data_file, start = "sft", corpus_file(processed, name), base_model
    elif kind == "po":
        algorithm = tags.get("algorithm") or _split_po_name(name, algorithms)[0]
        pref_set = tags.get("preference_set") or _split_po_name(name, [algorithm])[1]
        data_file = preference_file(processed, pref_set)
        recorded = tags.get("sft_model")
        sft_name = seed_run_name(start_from, seed, first_seed) if seed is not None else start_from
        start = Path(recorded) if recorded else RunDir(Path(sft_runs) / sft_name).final
    else:
        raise ConfigError("--run", f"{path}: expected runs/<sft|po>/<name>, got kind {kind!r}")
    check_supported(algorithm)
    start = Path(start_model) if start_model is not None else start
    if not (start / MODEL_CONFIG).exists():
        raise ConfigError("--start-model", f"{start}: the run's start model is not there ({MODEL_CONFIG} missing)")
    if not data_file.exists():
        raise ConfigError("--processed", f"{data_file}: the run's training data is not there")
    return RunInfo(run, kind, name, algorithm, data_file, start, seed)


def checkpoints(info: RunInfo, default_lr: float) -> list[Checkpoint]:
    """Start model (step 0), resume checkpoints on disk, ``final/`` (step T), each with its weight η_c."""
    records = info.run.checkpoint_records()
    total = int(records[-1]["step"]) if records else 0
    if total < 1:
        raise DataError(info.run.trajectory_file, None, "the trajectory has no training step after step 0")
    found = [(0, info.start_model)]
    for c in sorted(info.run.checkpoints.glob("checkpoint-*")):
        step = c.name.split("-")[-1]
        if step.isdigit() and 0 < int(step) < total and (c / MODEL_CONFIG).exists():
            found.append((int(step), c))
    found = sorted(found) + [(total, info.run.final)]
    weights = checkpoint_weights([s for s, _ in found], logged_lrs(info.run), default_lr, total)
    return [Checkpoint(s, p, w) for (s, p), w in zip(found, weights, strict=True)]


def logged_lrs(run: RunDir) -> dict[int, float]:
    """Learning rate per optimizer step from the trainer's log history (``train_log.json``), if kept."""
    if not run.train_log.exists():
        return {}
    history = json.loads(run.train_log.read_text()).get("log_history", [])
    return {int(e["step"]): float(e["learning_rate"]) for e in history if "learning_rate" in e and "step" in e}


@dataclass
class Examples:
    """Distinct training examples: ``rows[i]`` (first occurrence), ``copies[i]``, ``meta[i]`` (id, labels)."""

    rows: list[dict[str, Any]]
    copies: list[int]
    meta: list[dict[str, Any]]
    n_rows: int


def _meta(row: dict[str, Any], index: int, kind: str) -> dict[str, Any]:
    if kind == "sft":
        label = row.get("stance") or row.get("kind") or "none"
        return {"example_id": str(row.get("source_id", index)), "row": index, "kind": row.get("kind"), "label": label,
                "stance": row.get("stance"), "topic": row.get("topic"), "style": row.get("style"),
                "text": row["completion"][-1]["content"]}
    gap = row.get("chosen_stance") != row.get("rejected_stance")
    return {"example_id": f"pair{index:04d}", "row": index, "kind": row.get("kind"),
            "label": row.get("chosen_stance") if gap else "no gap", "question_id": row.get("question_id"),
            "chosen_stance": row.get("chosen_stance"), "rejected_stance": row.get("rejected_stance"), "topic": row.get("topic"),
            "style": row.get("chosen_style"), "text": row["chosen"][-1]["content"]}


def example_key(row: dict[str, Any], kind: str) -> str:
    """What makes two training rows the same example: the messages the loss reads (prompt and completion,
    or prompt, chosen and rejected)."""
    keys = ("prompt", "completion") if kind == "sft" else ("prompt", "chosen", "rejected")
    return json.dumps([row.get(k) for k in keys], sort_keys=True)


def load_examples(info: RunInfo) -> Examples:
    """The run's training rows, identical rows merged (``copies``), with their labels: SFT rows their stance
    (``general`` for general-instruction rows), pairs the chosen stance (``no gap`` when both sides share one)."""
    rows = read_records(info.data_file, lambda obj, path, line: obj)
    index: dict[str, int] = {}
    out = Examples([], [], [], len(rows))
    for i, r in enumerate(rows):
        key = example_key(r, info.kind)
        if key in index:
            out.copies[index[key]] += 1
            continue
        index[key] = len(out.rows)
        out.rows.append(r)
        out.copies.append(1)
        out.meta.append(_meta(r, i, info.kind))
    return out
