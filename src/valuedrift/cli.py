"""``valuedrift`` — one entry point, a subcommand per pipeline stage.

Every subcommand validates ``params.yaml`` before any work; a bad value exits with status 2 and a
message naming the key, a bad data record with file:line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from valuedrift.config.load import load_params
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.redaction import install_log_redaction
from valuedrift.stages.args import disk_full, os_error_message
from valuedrift.tracking import TrackingUnavailable, check_reachable

# Idle OpenMP threads sleep instead of spinning: spinning threads starve the working ones when the CPUs
# are shared (benchmarks/RESULTS.md); read once when torch loads, so set before any stage imports it (the
# modules imported above do not import torch; stage modules are imported on demand, below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# subcommand -> module with main(argv)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-model": ("valuedrift.stages.prepare_model", "export the bundled model / record the model source"),
    "prepare-data": ("valuedrift.stages.prepare_data", "validate data and build the SFT corpora"),
    "preferences": ("valuedrift.stages.preferences", "generate the synthetic value-gap preference sets"),
    "gap-analysis": ("valuedrift.stages.gap_analysis", "value gap (chosen − rejected stances) of any preference set"),
    "stance-mix": ("valuedrift.stages.stance_mix", "judge-labelled stance mix of an SFT corpus (+ agreement with its authored labels)"),
    "trace-base": ("valuedrift.stages.trace_base", "score the start model once on every route, as step 0 of all SFT runs"),
    "sft": ("valuedrift.stages.sft", "supervised fine-tuning with stance tracing"),
    "po": ("valuedrift.stages.po", "preference optimisation with stance tracing"),
    "attribute": ("valuedrift.stages.attribute", "drift attribution: TracIn-CP influence of every training example on each stance"),
    "counterfactual-data": ("valuedrift.stages.counterfactual_data", "an attributed run's data without its top-k / k random examples"),
    "retrain": ("valuedrift.stages.retrain", "retrain the attributed run on one counterfactual variant of its data"),
    "counterfactual": ("valuedrift.stages.counterfactual", "drift after removing the top-k examples vs k random ones"),
    "drift": ("valuedrift.stages.drift", "drift magnitude/time tables and trajectory plots"),
    "report": ("valuedrift.stages.report", "reports/report.md: tables, plots, verdicts on the paper's findings"),
    "eval": ("valuedrift.stages.eval", "stances of any checkpoint on the likelihood or paper route"),
    "train-judge": ("valuedrift.stages.train_judge", "fine-tune the classifier stance judge on dev-topic material (models/judge)"),
    "judge-eval": ("valuedrift.stages.judge_eval", "judge accuracy on the labelled set + agreement with the likelihood route"),
    "blind-answers": ("valuedrift.stages.blind_answers", "sample answers of several checkpoints into a blind set for hand labelling"),
    "instrument": ("valuedrift.stages.instrument", "route validity on the labelled generations + the quick judged route at phase ends"),
    "sweep": ("valuedrift.stages.tune", "Optuna sweep over algorithm hyperparameters, traced to drift (tune stage)"),
    "profile": ("valuedrift.stages.profile", "print `dvc exp run -S` overrides for a params profile"),
    "check-params": ("valuedrift.stages.check_params", "validate params.yaml and exit"),
    "params-schema": ("valuedrift.stages.params_schema", "write the JSON Schema of params.yaml (docs/params.schema.json)"),
    "relog": ("valuedrift.stages.relog", "re-send a run directory's results to MLflow (after a server outage)"),
    "tracking-server": ("valuedrift.stages.tracking_server", "a local MLflow server on 127.0.0.1"),
}


# commands that never read params.yaml (everything else is validated before its module is imported)
PARAMS_FREE: set[str] = {"tracking-server", "params-schema"}
# commands that log to MLflow (unless --no-mlflow): an HTTP tracking server that does not answer fails them
# before they import torch (Tracker.run checks again when the run opens)
TRACKED: set[str] = {"trace-base", "sft", "po", "sweep", "eval", "judge-eval", "instrument", "report", "attribute", "retrain", "counterfactual"}


def precheck_params(cmd: str, rest: list[str]) -> None:
    """Validate ``--params`` (default ``params.yaml``) before the command imports torch or loads a model,
    and for a tracked command check that the tracking server answers.

    Raises ConfigError (a ``--params`` file that does not exist is one too) or TrackingUnavailable.
    """
    if cmd in PARAMS_FREE or "-h" in rest or "--help" in rest:
        return
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--params")
    known, _ = ap.parse_known_args(rest)
    path = Path(known.params or "params.yaml")
    if not path.exists():
        if known.params is None:
            return  # the command decides whether it needs one
        raise ConfigError("--params", f"{path}: params file not found")
    params = load_params(path)
    if cmd in TRACKED and "--no-mlflow" not in rest:
        check_reachable(params.tracking.resolved_uri(), params.tracking.check_timeout_s)


def usage() -> str:
    lines = ["usage: valuedrift <command> [options]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`valuedrift <command> --help` lists each command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"valuedrift: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # MLflow's usage telemetry needs a network and edits os.environ from a thread; off unless asked for
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(
        level=os.environ.get("VALUEDRIFT_LOG", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()
    try:
        precheck_params(cmd, rest)
        module = importlib.import_module(COMMANDS[cmd][0])
        module.main(rest)
    except (ConfigError, DataError, TrackingUnavailable) as e:
        print(f"valuedrift {cmd}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        # last resort: a user path that the checks (config/path_checks.py, stages/args.py) did not cover
        print(f"valuedrift {cmd}: error: {os_error_message(e, rest)}", file=sys.stderr)
        return 2
    except Exception as e:
        full = disk_full(e)
        if full is None:
            raise
        # a full disk mid-run (a checkpoint, a stance table): nothing complete is lost, the rerun resumes
        print(f"valuedrift {cmd}: error: no space left on device ({full}); free some space and run the command "
              "again: it resumes from the last complete checkpoint", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
