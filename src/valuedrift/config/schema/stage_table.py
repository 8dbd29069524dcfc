"""The stage table: per DVC stage, the module it runs and the params keys it reads.

One declaration that ``dvc.yaml`` / ``sweeps/dvc.yaml`` / ``counterfactual/dvc.yaml`` ``params:`` lists, the run fingerprint of a training
run (:func:`run_input_keys`, used by ``valuedrift.train.scaffold``), the sweep's study inputs
(``valuedrift.tune.study``) and ``tests/test_stage_table.py`` share. It lives beside the params schema
(it is data about params keys and imports nothing), so every layer can read it. Keys are DVC ``params:`` entries: a whole
section (``model``) or a dotted key, with ``${item.*}`` / ``${key}`` for the stage's matrix or foreach.

A key is listed when the code the stage runs reads it to compute its outputs. Not listed: keys that only
select which runs exist (``sft.corpora``, ``po.algorithms``, the membership checks of ``--corpus`` or
``--preference-set``), keys only validated (``drift.stances``), and keys the DVC command line overrides
(``eval.route`` is replaced by ``--route``; ``po.start_from`` in ``sft`` by ``--corpus``).
"""

from __future__ import annotations

from dataclasses import dataclass

# what every traced training run (sft, po) reads of ``eval`` (train/scaffold.py: make_traced_run, per_seed)
TRACE_EVAL: tuple[str, ...] = (
    "eval.temperature",
    "eval.batch_size",
    "eval.prompt_format",
    "eval.system_prompt",
    "eval.trace_probes_per_topic",
    "eval.phase_probes_per_topic",
    "eval.probe_seed",
    "eval.splits",
    "eval.bootstrap",
    "eval.ci",
    "eval.capability_rows",
    "eval.trace_judged",  # the quick judged route beside it (train/scaffold.py: judged_tracer)
    "eval.quick",
    "eval.judges",
)
# what a stage that samples answers on chosen probes and bootstraps their stances reads of ``eval``
# (judge_eval's route agreement, instrument's quick judged route)
SAMPLED_EVAL: tuple[str, ...] = (
    "eval.prompt_format",
    "eval.system_prompt",
    "eval.splits",
    "eval.probe_seed",
    "eval.bootstrap",
    "eval.ci",
)
# the TrainConfig keys of a training section (train/scaffold.py: training_kwargs; sft/po max_length)
TRAIN_KEYS: tuple[str, ...] = (
    "max_steps",
    "num_train_epochs",
    "learning_rate",
    "batch_size",
    "grad_accum",
    "max_length",
    "eval_every",
    "warmup_ratio",
    "lr_scheduler",
    "weight_decay",
    "gradient_checkpointing",
    "mixed_precision",
    "peft",
)


@dataclass(frozen=True)
class Stage:
    """One DVC stage: the module ``valuedrift <cmd>`` runs and the params keys it reads."""

    module: str
    params: tuple[str, ...]
    dvc_file: str = "dvc.yaml"


STAGES: dict[str, Stage] = {
    "prepare_model": Stage("valuedrift.stages.prepare_model", ("model.name", "model.revision", "model.chat_template")),
    "prepare_data": Stage("valuedrift.stages.prepare_data", ("seed", "eval.capability_rows", "prepare_data.corpora")),
    "trace_base": Stage("valuedrift.stages.trace_base", ("seed", "model", "tracking", *TRACE_EVAL)),
    "sft": Stage(
        "valuedrift.stages.sft",
        ("seed", "seeds", "model", "tracking", *TRACE_EVAL, *(f"sft.{k}" for k in TRAIN_KEYS), "sft.padding_free"),
    ),
    "attribute": Stage(
        "valuedrift.stages.attribute",
        (
            "seed",  # eval.probe_seed's default
            "seeds",  # the first seed's run is the plain folder (a seeds/<k> run's start model)
            "model",
            "tracking",
            "eval.temperature",  # the readout: the likelihood route's q on the probe subsets
            "eval.batch_size",
            "eval.prompt_format",
            "eval.system_prompt",
            "eval.probe_seed",
            "eval.splits",
            "attribute.probes_per_topic",
            "attribute.last_blocks",
            "attribute.projection_dim",
            "attribute.top_k",
            "attribute.batch_size",
            "sft.max_length",  # the run's own loss: its tokenisation and (without train_log.json) learning rate
            "sft.learning_rate",
            "po.max_length",
            "po.learning_rate",
            "po.hparams",  # dpo: beta, loss_type
            "po.start_from",  # a po run's start model when its MLflow tags do not record it
        ),
    ),
    "preferences": Stage(
        "valuedrift.stages.preferences",
        (
            "seed",
            "po.start_from",  # the SFT run whose profile resolves reinforce / reverse
            "eval.bootstrap",
            "eval.ci",
            "model",  # LM generators (generator: hf | openai) load the writer and the judge with it
            "eval.judges",  # LM generators: the judge entry lm.judge
            "eval.paper.judge",  # the default judge of a dataset-sourced set's gap analysis (source.judge)
            "prepare_data.preference_sets.${key}",
        ),
    ),
    "stance_mix": Stage(
        "valuedrift.stages.stance_mix",
        ("model", "tracking", "eval.judges", "eval.paper.judge", "prepare_data.corpora.${key}"),
    ),
    "po": Stage(
        "valuedrift.stages.po",
        (
            "seed",
            "seeds",
            "model",
            "tracking",
            *TRACE_EVAL,
            "po.start_from",
            "po.hparams.${item.algorithm}",
            *(f"po.{k}" for k in TRAIN_KEYS),
        ),
    ),
    "eval": Stage(
        "valuedrift.stages.eval",
        (
            "seed",
            "model",
            "tracking",
            "eval.temperature",
            "eval.batch_size",
            "eval.prompt_format",
            "eval.system_prompt",
            "eval.phase_probes_per_topic",
            "eval.probe_seed",
            "eval.splits",
            "eval.bootstrap",
            "eval.ci",
            "eval.reference_profiles",
            "eval.paper",  # paper route
            "eval.judges",  # paper route: the judge eval.paper.judge
            "prepare_data.corpora",  # corpus_<name> reference profiles from each corpus' stance mix
        ),
    ),
    "train_judge": Stage("valuedrift.stages.train_judge", ("seed", "judge_train", "judge_eval.generations")),
    "judge_eval": Stage(
        "valuedrift.stages.judge_eval",
        (
            "seed",
            "model",  # dtype, device and trust settings of local judges (and of the agreement checkpoint)
            "tracking",
            "eval.temperature",  # the route agreement part (judge_eval.agreement_probes_per_topic > 0)
            "eval.batch_size",
            *SAMPLED_EVAL,
            "eval.paper",
            "eval.judges",
            "judge_eval",
        ),
    ),
    "instrument": Stage(
        "valuedrift.stages.instrument",
        (
            "seed",
            "model",
            "tracking",
            *SAMPLED_EVAL,
            "eval.quick",
            "eval.judges",  # the judge eval.quick.judge
            "judge_eval.generations",
            "po.start_from",  # where the preference runs start (their phase-start checkpoint)
        ),
    ),
    "drift": Stage("valuedrift.stages.drift", ("seeds", "eval.bootstrap", "eval.ci")),
    "report": Stage(
        "valuedrift.stages.report",
        (
            "seeds",
            "tracking",
            "attribute.runs",  # the attributed runs of the "Attribution" section
            "model.name",
            "model.dtype",
            "model.device",
            "eval.temperature",
            "eval.trace_probes_per_topic",
            "eval.bootstrap",
            "eval.ci",
            "sft.corpora",
            "sft.max_steps",
            "sft.num_train_epochs",
            "sft.peft",
            "sft.learning_rate",
            "sft.batch_size",
            "sft.grad_accum",
            "sft.eval_every",
            "po.start_from",
            "po.algorithms",
            "po.preference_sets",
            "po.max_steps",
            "po.num_train_epochs",
            "po.peft",
            "po.learning_rate",
            "po.eval_every",
            "prepare_data.corpora",
        ),
    ),
    "tune": Stage(
        "valuedrift.stages.tune",
        ("seed", "seeds", "model", "eval", "tracking", "po", "prepare_data.preference_sets", "tune"),
        dvc_file="sweeps/dvc.yaml",
    ),
    # the counterfactual-retraining subproject (counterfactual/dvc.yaml)
    "select": Stage(
        "valuedrift.stages.counterfactual_data",
        ("seed", "seeds", "po.start_from", "attribute.runs", "counterfactual"),
        dvc_file="counterfactual/dvc.yaml",
    ),
    "retrain": Stage(
        "valuedrift.stages.retrain",
        ("seed", "seeds", "model", "tracking", "eval", "sft", "po", "prepare_data.preference_sets", "attribute.runs",
         "counterfactual.run", "counterfactual.draws"),
        dvc_file="counterfactual/dvc.yaml",
    ),
    "compare": Stage(
        "valuedrift.stages.counterfactual",
        ("seed", "tracking", "eval.bootstrap", "eval.ci", "counterfactual"),
        dvc_file="counterfactual/dvc.yaml",
    ),
}


def fingerprint_keys(stage: str) -> list[str]:
    """The params keys ``stage`` reads (DVC ``params:`` form, ``${item.*}`` / ``${key}`` unsubstituted)."""
    try:
        return list(STAGES[stage].params)
    except KeyError:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}") from None


# keys a training stage reads that do not change what one run computes: which seeds exist (each seed's run
# has its own folder and fingerprint) and where MLflow logs
NOT_RUN_INPUTS: tuple[str, ...] = ("seeds", "tracking")


def run_input_keys(stage: str, **item: str) -> list[str]:
    """The params keys that define one run of ``stage`` (its fingerprint): the stage's keys without
    :data:`NOT_RUN_INPUTS`, with ``${item.<name>}`` replaced by ``item[name]`` (e.g. ``algorithm="dpo"``)."""
    keys = []
    for k in fingerprint_keys(stage):
        if k in NOT_RUN_INPUTS:
            continue
        for name, value in item.items():
            k = k.replace(f"${{item.{name}}}", value)
        if "${" in k:
            raise KeyError(f"stage {stage!r} key {k!r} needs a value for its ${{…}} (got {sorted(item)})")
        keys.append(k)
    return keys
