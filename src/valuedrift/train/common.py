"""What every training stage shares: run directories that resume, TrainingArguments, and tracing setup."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuedrift.config import Params, TrainConfig, to_dict
from valuedrift.data.bank import load_general
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.data.schemas import write_json
from valuedrift.models import pick_device
from valuedrift.stance.capability import CapabilityProbe, heldout_general_ids
from valuedrift.stance.likelihood import LikelihoodScorer
from valuedrift.tracking import Tracker, provenance_tags
from valuedrift.train.tracing import StanceTraceCallback, StanceTracer

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
SEEDS_DIR = "seeds"
CHECKPOINTS = "checkpoints"
FINAL = "final"


def fingerprint(*parts: Any) -> str:
    """A stable hash of the inputs that define a run (params, data digests, start model)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare_run_dir(run_dir: Path, fp: str) -> bool:
    """Keep ``run_dir`` for resuming if it was made by the same inputs; otherwise start it afresh.

    Returns True when an earlier, interrupted run of the same inputs can be resumed.
    """
    fp_file = run_dir / FINGERPRINT_FILE
    if fp_file.exists() and json.loads(fp_file.read_text()).get("fingerprint") == fp:
        return True
    if run_dir.exists():
        log.info("inputs changed since %s was written: starting it afresh", run_dir)
        for child in run_dir.iterdir():  # the other seeds' runs (SEEDS_DIR) have fingerprints of their own
            if child.name != SEEDS_DIR:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(json.dumps({"fingerprint": fp}) + "\n")
    return False


def seed_run_name(name: str, seed: int, params: Params) -> str:
    """Run folder of one training seed: ``<name>`` for the first of ``seeds``, ``<name>/seeds/<seed>`` else.

    The first seed keeps the plain layout (``runs/sft/<corpus>/``), so a single-seed study looks the same
    as before; each further seed lives inside, so one DVC output per stage holds all of them.
    """
    return name if seed == params.seeds[0] else f"{name}/{SEEDS_DIR}/{seed}"


def per_seed(params: Params) -> list[Params]:
    """One copy of ``params`` per training seed (``seed`` replaced), in the order of ``seeds``.

    ``eval.probe_seed`` is pinned to the top-level ``seed`` first (unless set), so every copy scores the
    same probe subsets."""
    ev = dataclasses.replace(params.eval, probe_seed=params.probe_seed)
    return [dataclasses.replace(params, seed=s, eval=ev) for s in params.seeds]


def run_complete(run_dir: Path, max_steps: int) -> bool:
    """A finished run: its final model is saved and its trajectory ends with the phase evaluation at max_steps."""
    traj = run_dir / "trajectory.json"
    if not (run_dir / FINAL / "config.json").exists() or not traj.exists():
        return False
    ckpts = json.loads(traj.read_text()).get("checkpoints", [])
    return bool(ckpts) and ckpts[-1]["step"] == max_steps and ckpts[-1]["phase"]


TRAIN_LOG = "train_log.json"


def drop_checkpoints(run_dir: Path, log_history: list[dict[str, Any]]) -> None:
    """Delete the resume checkpoints of a finished run (GBs of optimizer state DVC would otherwise cache),
    keeping the trainer's log history in ``train_log.json`` (what ``valuedrift relog`` re-sends)."""
    write_json(run_dir / TRAIN_LOG, {"log_history": log_history})
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


def last_checkpoint(run_dir: Path) -> str | None:
    ckpts = sorted((run_dir / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in ckpts if _readable_state(c / "trainer_state.json")]
    return str(complete[-1]) if complete else None


def _readable_state(path: Path) -> bool:
    """A checkpoint counts only if its trainer state is complete JSON (a kill can leave it half-written)."""
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, json.JSONDecodeError):
        return False


def training_kwargs(cfg: TrainConfig, params: Params, run_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by every TRL config. Checkpoints are saved at the evaluation cadence."""
    return {
        "output_dir": str(run_dir / CHECKPOINTS),
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": cfg.eval_every,
        "save_total_limit": 2,
        "report_to": [],
        "seed": params.seed,
        "data_seed": params.seed,
        "use_cpu": pick_device(params.model.device) == "cpu",
        "dataloader_num_workers": 0,
        "bf16": params.model.dtype == "bfloat16",
        "fp16": params.model.dtype == "float16",
        # TRL configs switch gradient checkpointing on by default; on CPU it costs 10-17% per step
        # (benchmarks/bench_algorithms.py) and a 135M model does not need the memory
        "gradient_checkpointing": cfg.gradient_checkpointing,
    }


@dataclass
class TracedRun:
    """Tracker + tracer + callback for one training run."""

    tracker: Tracker
    tracer: StanceTracer
    callback: StanceTraceCallback


def make_traced_run(params: Params, run_dir: Path, tokenizer: Any, every: int, data_dir: Path = Path("data")) -> TracedRun:
    ev = params.eval
    bank = load_probe_bank(data_dir)
    trace = select_probes(bank, ev.trace_probes_per_topic, ev.splits, params.probe_seed)
    phase = select_probes(bank, ev.phase_probes_per_topic, ev.splits, params.probe_seed)
    scorer = LikelihoodScorer(tokenizer, ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)
    tracker = Tracker(params.tracking, run_dir)
    tracer = StanceTracer(scorer, trace, phase, run_dir, tracker, ev.bootstrap, ev.ci, params.seed)
    if ev.capability_rows > 0:
        general = load_general(data_dir)
        held = heldout_general_ids(general, ev.capability_rows, params.seed)
        rows = [r for r in general if r["id"] in held]
        tracer.capability = CapabilityProbe(tokenizer, rows, ev.batch_size, ev.prompt_format)
    return TracedRun(tracker, tracer, StanceTraceCallback(tracer, every, tracker))


def run_tags(stage: str, algorithm: str | None = None, **extra: str) -> dict[str, str]:
    tags = {**provenance_tags(), "stage": stage, "algorithm": algorithm or stage}
    tags.update(extra)
    return tags


def flat_params(params: Params, *sections: str) -> dict[str, Any]:
    from valuedrift.config import flatten

    d = to_dict(params)
    return flatten({k: d[k] for k in ("seed", "model", "eval", *sections)})
