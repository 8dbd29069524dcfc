"""Where a study lives and who runs it: Optuna storage (RDB or journal file), the seeded sampler, the
pruner, and the bookkeeping of worker processes and trial states.

Storage (``tune.storage``, overridden by ``$VALUEDRIFT_OPTUNA_STORAGE``): an RDB URL (``sqlite:///optuna.db``
by default, ``postgresql://…``, ``mysql://…``) or ``journal:<file>`` (Optuna's JournalStorage, good for
several processes on one machine). A trial whose worker died is found by its heartbeat (RDB storages) or,
on the same host, because its process is gone (:func:`process_alive`).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from valuedrift.config.schema.tune import TuneConfig
from valuedrift.core.errors import check
from valuedrift.core.redaction import redact
from valuedrift.tune.space import Dimension, grid_space, sampler_name

STORAGE_ENV = "VALUEDRIFT_OPTUNA_STORAGE"
JOURNAL_PREFIX = "journal:"
SCHEMA_RACE_RETRIES = 3  # concurrent first connections to an empty RDB (make_storage)
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


# --------------------------------------------------------------------------------------------------
# Storage, sampler, pruner
# --------------------------------------------------------------------------------------------------


def resolve_storage(tune: TuneConfig) -> str:
    return os.environ.get(STORAGE_ENV) or tune.storage


def check_storage(url: str) -> None:
    key = "tune.storage" if not os.environ.get(STORAGE_ENV) else f"${STORAGE_ENV}"
    if url.startswith(JOURNAL_PREFIX):
        check(bool(url[len(JOURNAL_PREFIX):].strip()), key, "journal:<file> needs a file path")
        return
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    check(scheme in RDB_SCHEMES, key, f"{redact(url)!r} is neither an RDB URL ({', '.join(RDB_SCHEMES)}://…) nor journal:<file>")


def make_storage(url: str, heartbeat_s: int, on_stale: Any) -> optuna.storages.BaseStorage:
    """JournalStorage for ``journal:<file>``; otherwise an RDBStorage with a heartbeat, so that a trial
    whose worker died is failed (and ``on_stale`` retries it) once ``2 × heartbeat_s`` passed silently."""
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                heartbeat_stale_trial_callback=on_stale,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            # two workers starting at once on an empty database both create Optuna's schema; on PostgreSQL
            # the loser fails: a duplicate enum type (IntegrityError) or a duplicate table ("relation ...
            # already exists", ProgrammingError). The schema exists now: connect again.
            if attempt == SCHEMA_RACE_RETRIES or not schema_race(e):
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")  # pragma: no cover


# PostgreSQL SQLSTATEs of creating what another connection just created: unique_violation (the enum type's
# catalog row), duplicate_table, duplicate_object
SCHEMA_RACE_CODES = {"23505", "42P07", "42710"}


def schema_race(e: sqlalchemy.exc.DBAPIError) -> bool:
    """Whether ``e`` is the schema-creation race of :func:`make_storage` (and not another SQL error)."""
    code = getattr(e.orig, "pgcode", None)
    return code in SCHEMA_RACE_CODES if code is not None else isinstance(e, sqlalchemy.exc.IntegrityError)


def make_sampler(tune: TuneConfig, seed: int, dims: dict[str, list[Dimension]]) -> optuna.samplers.BaseSampler:
    """Seeded: ``seed`` = params.seed + the worker index (parallel workers must not propose the same points)."""
    name = sampler_name(tune)
    if name == "tpe":  # multivariate + group: the joint density over the conditional space (per algorithm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials, multivariate=True, group=True)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(tune, dims), seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=tune.population_size)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """MedianPruner by default; Optuna cannot prune multi-objective studies, so those never prune."""
    if tune.pruner == "median" and len(tune.objectives) == 1:
        return optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=tune.pruner_warmup_steps)
    return optuna.pruners.NopPruner()



def worker_identity(index: int) -> dict[str, Any]:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time(), "index": index}


def process_alive(worker: dict[str, Any]) -> bool:
    """Whether the worker process that owns a trial still runs (same host only; pid reuse is caught by
    comparing the process start time)."""
    import psutil

    try:
        return abs(psutil.Process(int(worker["pid"])).create_time() - float(worker["started"])) < 0.01
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


@dataclass
class TrialCounts:
    complete: int = 0
    pruned: int = 0
    fail: int = 0  # raised an error: counts as done
    interrupted: int = 0  # worker died: retried, does not count
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.fail


def count_trials(study: optuna.Study) -> TrialCounts:
    c = TrialCounts()
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.FAIL:
            if "error" in t.user_attrs:
                c.fail += 1
            else:
                c.interrupted += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
    return c
