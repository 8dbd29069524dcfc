"""The one run scaffold that ``sft`` and ``po`` share: a run folder that resumes, TrainingArguments,
stance tracing, the MLflow run, training, and saving.

A training kind supplies a :class:`RunPlan` (what differs: the start model, the data, the trainer) and
:func:`train_traced` does the rest, in this order:

1. fingerprint the run's inputs; a run folder made by other inputs starts afresh, one made by the same
   inputs resumes from its last checkpoint, and a complete one is not trained again;
2. seed everything, load the tokenizer, build the stance tracer (:mod:`valuedrift.train.tracing`);
3. open the MLflow run (rank 0 only), log the training data as an input, call ``plan.before_train``;
4. load the model, build the trainer, train (resuming), save ``final/``, drop the resume checkpoints.

Training length: ``max_steps``, or ``num_train_epochs`` converted to optimizer steps over the plan's
``n_examples`` (``TrainConfig.total_steps``); TRL always gets ``max_steps``, so the trajectory's step axis,
the checkpoint cadence (``TrainConfig.eval_interval``) and the completeness check agree. With ``peft`` the
trainer trains an adapter and ``final/`` is the merged model (:mod:`valuedrift.adapters`).

Under ``accelerate launch`` every rank trains; rank 0 alone prepares the run folder, scores stances and
talks to MLflow (:mod:`valuedrift.core.processes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valuedrift.adapters import load_trainable, save_trained
from valuedrift.config.schema.evaluation import EvalConfig
from valuedrift.config.schema.models import ModelConfig
from valuedrift.config.schema.params import Params
from valuedrift.config.schema.parse import flatten, pick, to_dict
from valuedrift.config.schema.stage_table import run_input_keys
from valuedrift.config.schema.training import TrainConfig
from valuedrift.core.io import file_digest, fingerprint, write_json
from valuedrift.core.paths import DATA
from valuedrift.core.processes import is_main_process, main_process_first, world_size
from valuedrift.core.rundir import JUDGED_DIR, RunDir, seed_run_name
from valuedrift.data.bank import load_general
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.models import load_configured, load_model, load_tokenizer, pick_device
from valuedrift.stance.capability import CapabilityProbe, heldout_general_ids
from valuedrift.stance.likelihood import LikelihoodScorer
from valuedrift.tracking import Tracker, provenance_tags
from valuedrift.train.tracing import CheckpointModels, StanceTraceCallback, StanceTracer, TrainLogCallback

log = logging.getLogger(__name__)


def seed_run_dir(out_root: Path, name: str, params: Params) -> RunDir:
    """The run folder of ``name`` for training seed ``params.seed`` (``<name>`` or ``<name>/seeds/<k>``)."""
    return RunDir(Path(out_root) / seed_run_name(name, params.seed, params.seeds[0]))


def per_seed(params: Params) -> list[Params]:
    """One copy of ``params`` per training seed (``seed`` replaced), in the order of ``seeds``.

    ``eval.probe_seed`` is pinned to the top-level ``seed`` first (unless set), so every copy scores the
    same probe subsets."""
    ev = dataclasses.replace(params.eval, probe_seed=params.probe_seed)
    return [dataclasses.replace(params, seed=s, eval=ev) for s in params.seeds]


def prepare_run_dir(run: RunDir, fp: str) -> bool:
    """Keep ``run`` for resuming if it was made by the same inputs; otherwise start it afresh.

    Returns True when an earlier, interrupted run of the same inputs can be resumed.
    """
    if run.stored_fingerprint() == fp:
        return True
    if run.path.exists():
        log.info("inputs changed since %s was written: starting it afresh", run.path)
        run.reset()
    run.write_fingerprint(fp)
    return False


def finish_run_dir(run: RunDir, log_history: list[dict[str, Any]]) -> None:
    """A finished run keeps the trainer's log history in ``train_log.json`` (what ``valuedrift relog``
    re-sends) and drops its resume checkpoints (GBs of optimizer state DVC would otherwise cache)."""
    write_json(run.train_log, {"log_history": log_history})
    run.drop_checkpoints()


def training_kwargs(cfg: TrainConfig, seed: int, dtype: str, device: str, run: RunDir, total_steps: int) -> dict[str, Any]:
    """TrainingArguments shared by every TRL config: ``total_steps`` optimizer steps (``cfg.total_steps``),
    checkpoints saved at the evaluation cadence (``cfg.eval_interval``), bf16 / fp16 mixed precision from
    ``model.dtype`` (``dtype``) or bf16 autocast of float32 weights (``cfg.mixed_precision``)."""
    return {
        "output_dir": str(run.checkpoints),
        "max_steps": total_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": cfg.eval_interval(total_steps),
        "save_total_limit": 2,
        "report_to": [],
        "seed": seed,
        "data_seed": seed,
        "use_cpu": pick_device(device) == "cpu",
        "dataloader_num_workers": 0,
        "bf16": dtype == "bfloat16" or cfg.mixed_precision == "bf16",
        "fp16": dtype == "float16",
        # TRL configs switch gradient checkpointing on by default; on CPU it costs 10-17% per step
        # (benchmarks/bench_algorithms.py) and a 135M model does not need the memory
        "gradient_checkpointing": cfg.gradient_checkpointing,
    }


@dataclass
class TracedRun:
    """Tracker + tracers + callback for one training run: ``tracer`` is the likelihood route (the run
    folder's own trajectory), ``judged`` the quick judged route in ``<run>/judged`` (``eval.trace_judged``)."""

    tracker: Tracker | None
    tracer: StanceTracer
    callback: StanceTraceCallback
    judged: StanceTracer | None = None

    @property
    def tracers(self) -> list[StanceTracer]:
        return [t for t in (self.tracer, self.judged) if t is not None]

    def adopt_start(self, source_dir: Path) -> None:
        """Step 0 of every route = the last evaluation of ``source_dir`` (the same weights), where it matches
        (:meth:`StanceTracer.adopt_start`)."""
        self.tracer.adopt_start(source_dir)
        if self.judged is not None:
            self.judged.adopt_start(Path(source_dir) / JUDGED_DIR)


def make_traced_run(
    ev: EvalConfig, probe_seed: int, seed: int, tracker: Tracker | None, run: RunDir, tokenizer: Any, every: int,
    data_dir: Path = DATA, judge_model: ModelConfig | None = None,
) -> TracedRun:
    """The stance tracers of a run: trace and phase probe subsets drawn with ``probe_seed``, the likelihood
    scorer of ``eval``, the capability probe when ``eval.capability_rows > 0``, and the judged route when
    ``eval.trace_judged`` (its judge loaded with ``judge_model``'s dtype, device and trust settings)."""
    bank = load_probe_bank(data_dir)
    trace = select_probes(bank, ev.trace_probes_per_topic, ev.splits, probe_seed)
    phase = select_probes(bank, ev.phase_probes_per_topic, ev.splits, probe_seed)
    scorer = LikelihoodScorer(tokenizer, ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)
    tracer = StanceTracer(scorer, trace, phase, run.path, tracker, ev.bootstrap, ev.ci, seed)
    if ev.capability_rows > 0:
        general = load_general(data_dir)
        held = heldout_general_ids(general, ev.capability_rows, seed)
        rows = [r for r in general if r["id"] in held]
        tracer.capability = CapabilityProbe(tokenizer, rows, ev.batch_size, ev.prompt_format)
    judged = judged_tracer(ev, judge_model or ModelConfig(), probe_seed, seed, tracker, run, tokenizer, bank) if ev.trace_judged else None
    if tracker is not None:  # every checkpoint an MLflow logged model, shared by both routes
        models = CheckpointModels(tracker, checkpoint_model_name(run.path), run.path)
        for t in (tracer, judged):
            if t is not None:
                t.models = models
    return TracedRun(tracker, tracer, StanceTraceCallback(tracer, every, tracker, [judged] if judged else []), judged)


def checkpoint_model_name(run_path: Path) -> str:
    """``<kind>-<name>`` (``sft-neutral_heavy``, ``po-dpo-value_gap``), ``-seed<k>`` for a further seed's folder."""
    parts = Path(run_path).parts
    if len(parts) >= 4 and parts[-2] == "seeds":
        return f"{parts[-4]}-{parts[-3]}-seed{parts[-1]}"
    return "-".join(parts[-2:])


def judged_tracer(
    ev: EvalConfig, model_cfg: ModelConfig, probe_seed: int, seed: int, tracker: Tracker | None, run: RunDir, tokenizer: Any,
    bank: list[Any],
) -> StanceTracer:
    """The quick judged route (``eval.quick``) traced in ``<run>/judged``: its ``probes_per_topic`` probes at
    every checkpoint (trace and phase sets are the same), labelled by ``eval.quick.judge``."""
    from valuedrift.stance.evaluation import make_judge
    from valuedrift.stance.paper_route import JudgedTraceScorer, PaperRouteScorer

    q = ev.quick
    probes = select_probes(bank, q.probes_per_topic, ev.splits, probe_seed)
    route = PaperRouteScorer(tokenizer, make_judge(ev.judges, model_cfg, q.judge), q, probe_seed, ev.prompt_format, ev.system_prompt)
    return StanceTracer(JudgedTraceScorer(route, q.judge), probes, probes, run.path / JUDGED_DIR, tracker,
                        ev.bootstrap, ev.ci, seed, route=JUDGED_DIR)


def run_tags(stage: str, algorithm: str | None = None, **extra: str) -> dict[str, str]:
    tags = {**provenance_tags(), "stage": stage, "algorithm": algorithm or stage}
    tags.update(extra)
    return tags


def flat_params(params: Params, *sections: str) -> dict[str, Any]:
    """``seed``, ``model``, ``eval`` and the named sections of ``params``, flattened to dotted keys."""
    d = to_dict(params)
    return flatten({k: d[k] for k in ("seed", "model", "eval", *sections)})


# builds the trainer: (model, tokenizer, TrainingArguments kwargs, callbacks, traced run) -> a transformers Trainer
TrainerBuilder = Callable[[Any, Any, dict[str, Any], list[Any], TracedRun], Any]


@dataclass
class RunPlan:
    """What one training kind (sft, po) puts into the shared scaffold.

    ``inputs`` are the values that define the run beyond the params the scaffold fingerprints itself
    (the kind's own section, an algorithm's hyperparameters); ``frame`` is the training data as a table
    for MLflow's dataset input; ``before_train`` runs on rank 0 inside the open MLflow run. ``n_examples``
    is the number of training examples in one epoch (what ``batch_size`` counts), from which
    ``num_train_epochs`` becomes a number of steps.
    """

    kind: str  # sft | po
    name: str  # the run folder's name: <corpus> or <algorithm>-<set>
    run_name: str  # the MLflow run's name
    train: TrainConfig
    start_model: Path
    data_file: Path
    inputs: dict[str, Any]
    build_trainer: TrainerBuilder
    n_examples: int
    algorithm: str | None = None  # the MLflow ``algorithm`` tag (default: the kind)
    tags: dict[str, str] = field(default_factory=dict)
    mlflow_params: dict[str, Any] = field(default_factory=dict)
    frame: Any = None
    input_name: str = ""
    input_source: Any = None  # MLflow dataset source of ``frame`` (tracking.dataset_source); None = data_file
    before_train: Callable[[TracedRun], None] | None = None


def run_inputs(params: Params, stage: str, **item: str) -> dict[str, Any]:
    """The params values that define one run of ``stage``: its keys in the stage table
    (:func:`valuedrift.config.schema.stage_table.run_input_keys`), the same list dvc.yaml declares."""
    return pick(to_dict(params), run_input_keys(stage, **item))


def run_fingerprint(params: Params, inputs: dict[str, Any], data_file: Path, start_model: Path) -> str:
    """What defines one run: its ``inputs`` (:func:`run_inputs`, plus what a kind resolves itself, such as an
    algorithm's hyperparameters with the registry's defaults), the data and the start model.

    Selection keys (the lists of corpora, algorithms, preference sets, seeds) are not inputs: adding another
    entry to the matrix does not restart the runs that exist.
    """
    return fingerprint(inputs, file_digest(data_file), str(start_model))


def train_traced(
    params: Params, plan: RunPlan, out_root: Path, callbacks: list[Any] | None = None, data_dir: Path = DATA
) -> RunDir:
    """Train, trace and save one run of ``plan`` with seed ``params.seed``; returns its run folder.

    ``callbacks`` are extra ``TrainerCallback`` objects (e.g. an Optuna pruning hook); ``data_dir`` holds
    the probe bank the tracer scores (and the general rows of the capability probe).
    """
    from transformers import set_seed

    run = seed_run_dir(out_root, plan.name, params)
    total = plan.train.total_steps(plan.n_examples, world_size())
    kwargs = training_kwargs(plan.train, params.seed, params.model.dtype, params.model.device, run, total)
    with main_process_first(kwargs["use_cpu"]):
        resumable = prepare_run_dir(run, run_fingerprint(params, plan.inputs, plan.data_file, plan.start_model))
    if resumable and run.complete(total):
        log.info("%s is complete (same inputs, final model and evaluation on disk): nothing to train", run.path)
        return run
    set_seed(params.seed)
    is_main = is_main_process()
    model_cfg = params.model
    tokenizer = load_tokenizer(plan.start_model, model_cfg.trust_remote_code)
    tracker = Tracker(params.tracking, run.path)
    traced = make_traced_run(
        params.eval, params.probe_seed, params.seed, tracker, run, tokenizer, kwargs["save_steps"], data_dir, params.model
    )
    resume = run.last_checkpoint() if resumable else None
    tags = run_tags(plan.kind, plan.algorithm, **plan.tags, seed=str(params.seed), world_size=str(world_size()))
    tags["mlflow.note.content"] = run_description(plan, params, total, traced.tracer.run.path)
    opened = tracker.run(plan.run_name, tags, plan.mlflow_params)
    with opened if is_main else contextlib.nullcontext():
        if is_main:
            tracker.log_input(plan.frame, name=plan.input_name, source=plan.input_source or str(plan.data_file))
            tracker.log_input(probe_frame(traced.tracer.phase_probes), name="v_prism probes", source=str(data_dir),
                              context="evaluation")
            if plan.before_train is not None:
                plan.before_train(traced)
        started = time.perf_counter()
        model = load_trainable(plan.start_model, model_cfg, plan.train, f"{plan.kind}.peft")
        trainer = plan.build_trainer(model, tokenizer, kwargs, [traced.callback, *(callbacks or [])], traced)
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        # an adapter is merged into a fresh unquantized copy of the start model, on the CPU (the GPU still holds the trained one)
        save_trained(trainer, run.final, run.adapter,
                     lambda: load_model(plan.start_model, model_cfg.dtype, "cpu", model_cfg.trust_remote_code))
        if is_main:
            tokenizer.save_pretrained(str(run.final))
            tracker.log_metrics(run_timing(time.perf_counter() - started, traced.callback.eval_seconds_by_route),
                                step=trainer.state.global_step)
            for tracer in traced.tracers:
                tracer.log_phase_drift()
            finish_run_dir(run, trainer.state.log_history)  # checkpoints only serve resuming; final model and evaluations stay
    return run


def run_timing(run_seconds: float, eval_by_route: dict[str, float]) -> dict[str, float]:
    """The ``time/…`` metrics of a finished run: ``run_seconds`` from loading the model to the saved final
    model (this process, one invocation; a resumed run counts its last part only), ``eval_seconds`` of it
    spent scoring stances (the sum over routes; ``eval_seconds/<route>`` each: ``likelihood``, ``judged``),
    ``train_seconds`` = the rest, and ``eval_share`` = eval ÷ train (the issue-15 goal: ≤ 0.25). MLflow's run
    duration is no measure: later stages (attribution) log into the same run."""
    eval_seconds = sum(eval_by_route.values())
    train = max(run_seconds - eval_seconds, 1e-9)
    return {"time/run_seconds": run_seconds, "time/eval_seconds": eval_seconds, "time/train_seconds": train,
            "time/eval_share": eval_seconds / train, **{f"time/eval_seconds/{r}": s for r, s in eval_by_route.items()}}


def run_description(plan: RunPlan, params: Params, total_steps: int, run_path: Path) -> str:
    """The MLflow run description (Markdown, shown on the run page): what was trained on what, and where."""
    what = "SFT" if plan.kind == "sft" else (plan.algorithm or plan.kind)
    return (f"{what} of `{plan.start_model}` on `{plan.data_file}` ({plan.n_examples} examples, {total_steps} steps, "
            f"lr {plan.train.learning_rate:g}, seed {params.seed}); stances traced every {plan.train.eval_every} steps "
            f"(`eval.route` likelihood{' + judged' if params.eval.trace_judged else ''}). Run folder `{run_path}`; "
            "checkpoints are this run's logged models (weights in the DVC cache).")


def probe_frame(probes: list[Any]) -> Any:
    """The probes a run is scored on, as a table (the run's evaluation dataset input)."""
    import pandas as pd

    return pd.DataFrame([{"probe_id": p.id, "topic": p.topic, "split": p.split, "question": p.question} for p in probes])


def log_callbacks(tracker: Tracker | None) -> Callable[[str], list[Any]]:
    """``prefix -> [TrainLogCallback]`` mirroring an extra training phase to ``tracker`` (none if untracked)."""
    return lambda prefix: [TrainLogCallback(tracker, prefix)] if tracker is not None else []


def trace_start_model(params: Params, model_path: Path, out: Path, data_dir: Path = DATA, tracked: bool = True) -> RunDir:
    """Score ``model_path`` once, as step 0 of every route, into the run folder ``out`` (``runs/base``): every
    SFT run (each corpus, each seed) then adopts it as its own step 0 instead of scoring the same weights
    again (:meth:`TracedRun.adopt_start`). Logged as the MLflow run ``base`` when ``tracked``."""
    run = RunDir(out)
    run.reset()
    tokenizer = load_tokenizer(model_path, params.model.trust_remote_code)
    tracker = Tracker(params.tracking, run.path) if tracked else None
    traced = make_traced_run(params.eval, params.probe_seed, params.seed, tracker, run, tokenizer, 1, data_dir, params.model)
    model = load_configured(model_path, params.model)
    with tracker.run("base", run_tags("base", model=params.model.name), flat_params(params)) if tracker else contextlib.nullcontext():
        for tracer in traced.tracers:
            tracer.evaluate(model, 0, phase=True)
    return run
