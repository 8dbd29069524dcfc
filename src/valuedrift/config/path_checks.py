"""Every path-valued key of ``params.yaml``, checked before any work (issue 18 item 2).

:data:`PATH_PARAMS` is the declarative table: for each key (``*`` = every entry of a mapping) whether a
file or a folder is expected and when it must already exist. :func:`check_param_paths` walks it over a
parsed :class:`~valuedrift.config.schema.params.Params` and raises
:class:`~valuedrift.core.errors.ConfigError` naming the key for a path that is missing (when required), a
folder where a file is expected, a file where a folder is expected, or unreadable.

Only what exists before the pipeline runs is checked here (authored data under ``data/``, a local model
folder given as ``model.name``, a reference file). Outputs of earlier stages (``models/base``, ``runs/…``)
may not exist yet at validation time: a path that exists must still be the right kind, and the stage that
reads it checks it again (its CLI flags: :func:`valuedrift.stages.args.check_path`). Relative paths are
relative to the working directory (the repository root under ``dvc repro``), as everywhere in params.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from valuedrift.config.schema.params import Params
from valuedrift.core.errors import ConfigError

Kind = Literal["file", "dir", "any"]  # any: a file or a folder
# when a path must exist at validation time
Required = Literal["always", "if_local", "if_exists"]

REFERENCE_SUFFIXES = (".json", ".yaml", ".yml")
OPTUNA_STORAGE_ENV = "VALUEDRIFT_OPTUNA_STORAGE"  # as valuedrift.tune.storage.STORAGE_ENV
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class PathParam:
    """One path-valued key. ``values(params)`` yields ``(dotted key, path)`` for each concrete key the
    pattern names that holds a path (entries of the wrong kind, e.g. an ``openai`` judge's model name or a
    hub id, yield nothing)."""

    key: str
    kind: Kind
    required: Required
    when: str  # human-readable: when the key is a path and when it must exist
    values: Callable[[Params], Iterator[tuple[str, str]]]


def looks_local(value: str) -> bool:
    """Whether a model spec reads as a local path rather than a bundled name or a hub id ``org/name``
    (the same rule as :func:`valuedrift.models.check_model_spec` and ``ModelConfig.validate``)."""
    p = Path(value)
    if value.startswith((".", "/", "~")) or p.exists() or value.count("/") > 1:
        return True
    head = p.parts[0] if "/" in value else None
    return head is not None and Path(head).is_dir()


def _model_name(params: Params) -> Iterator[tuple[str, str]]:
    if looks_local(params.model.name):
        yield "model.name", params.model.name


def _reference_profiles(params: Params) -> Iterator[tuple[str, str]]:
    yield "eval.reference_profiles", params.eval.reference_profiles


def _judge_templates(params: Params) -> Iterator[tuple[str, str]]:
    for name, judge in params.eval.judges.items():
        yield f"eval.judges.{name}.template", judge.template


def _judge_models(params: Params) -> Iterator[tuple[str, str]]:
    for name, judge in params.eval.judges.items():
        if judge.kind in ("hf", "classifier") and looks_local(judge.model):
            yield f"eval.judges.{name}.model", judge.model


def _labelled(params: Params) -> Iterator[tuple[str, str]]:
    yield "judge_eval.labelled", params.judge_eval.labelled


def _generations(params: Params) -> Iterator[tuple[str, str]]:
    if params.judge_eval.generations is not None:
        yield "judge_eval.generations", params.judge_eval.generations


def _lm_models(params: Params) -> Iterator[tuple[str, str]]:
    for name, pref in params.prepare_data.preference_sets.items():
        if pref.generator == "hf" and pref.lm.model.strip() and looks_local(pref.lm.model):
            yield f"prepare_data.preference_sets.{name}.lm.model", pref.lm.model


def _source_paths(section: Literal["corpora", "preference_sets"]) -> Callable[[Params], Iterator[tuple[str, str]]]:
    def values(params: Params) -> Iterator[tuple[str, str]]:
        for name, entry in getattr(params.prepare_data, section).items():
            if entry.source is not None and looks_local(entry.source.path):
                yield f"prepare_data.{section}.{name}.source.path", entry.source.path

    return values


def _tune_reference(params: Params) -> Iterator[tuple[str, str]]:
    ref = params.tune.reference
    if isinstance(ref, str) and ("/" in ref or ref.endswith(REFERENCE_SUFFIXES) or Path(ref).exists()):
        yield "tune.reference", ref  # a bare name is a profile in eval.reference_profiles (config.load checks it)


def _tune_storage(params: Params) -> Iterator[tuple[str, str]]:
    url = os.environ.get(OPTUNA_STORAGE_ENV) or params.tune.storage
    key = f"${OPTUNA_STORAGE_ENV}" if os.environ.get(OPTUNA_STORAGE_ENV) else "tune.storage"
    if url.startswith("journal:") and url[len("journal:"):].strip():
        yield key, url[len("journal:"):]
    elif url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        yield key, url[len("sqlite:///"):]


def _tracking_store(params: Params) -> Iterator[tuple[str, str]]:
    uri = params.tracking.resolved_uri()
    key = f"${MLFLOW_URI_ENV}" if os.environ.get(MLFLOW_URI_ENV) else "tracking.uri"
    if uri.startswith("sqlite:///") and uri[len("sqlite:///"):] not in ("", ":memory:"):
        yield key, uri[len("sqlite:///"):]


def _tracking_folder(params: Params) -> Iterator[tuple[str, str]]:
    uri = params.tracking.resolved_uri()
    key = f"${MLFLOW_URI_ENV}" if os.environ.get(MLFLOW_URI_ENV) else "tracking.uri"
    if uri.startswith("file:"):
        yield key, uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]
    elif "://" not in uri:
        yield key, uri  # a plain path: MLflow's file store (a folder)


PATH_PARAMS: tuple[PathParam, ...] = (
    PathParam("model.name", "dir", "always",
              "when it reads as a local path (starts with . / ~, exists, or its first part is a local folder); "
              "bundled names and hub ids org/name are no paths", _model_name),
    PathParam("eval.reference_profiles", "dir", "always",
              "always: the folder of reference profiles (JSON) for the alignment metrics", _reference_profiles),
    PathParam("eval.judges.*.template", "file", "always",
              "always, for every judge defined: the judge prompt (YAML)", _judge_templates),
    PathParam("eval.judges.*.model", "dir", "if_exists",
              "kind hf or classifier and a local path: a model folder; may be made by prepare_model (models/base) "
              "or train_judge (models/judge), so it "
              "must exist only when the judge is built (stance.judges.check_judge)", _judge_models),
    PathParam("judge_eval.labelled", "file", "always",
              "always: the labelled stance set (JSON Lines)", _labelled),
    PathParam("judge_eval.generations", "dir", "always",
              "unless null: the labelled real generations (answers, key, labels; data/AUTHORING.md)", _generations),
    PathParam("prepare_data.preference_sets.*.lm.model", "dir", "if_exists",
              "generator hf and a local path: a model folder; may be made by prepare_model, checked when the "
              "generator loads it", _lm_models),
    PathParam("prepare_data.corpora.*.source.path", "any", "always",
              "a corpus read from a dataset, when the path reads as a local path (as model.name): a file or a "
              "folder in the dataset's hub layout; a hub id org/name is no path", _source_paths("corpora")),
    PathParam("prepare_data.preference_sets.*.source.path", "any", "always",
              "a preference set read from a dataset (generator: source), when the path reads as a local path: "
              "a file or a folder in the dataset's hub layout; a hub id org/name is no path",
              _source_paths("preference_sets")),
    PathParam("tune.reference", "file", "always",
              "when a string naming a file (has a /, ends .json/.yaml/.yml, or exists); a bare name is a "
              "profile in eval.reference_profiles", _tune_reference),
    PathParam("tune.storage", "file", "if_exists",
              "sqlite:///<file> or journal:<file> ($VALUEDRIFT_OPTUNA_STORAGE overrides): created if missing; "
              "if present it must be a readable file", _tune_storage),
    PathParam("tracking.uri", "file", "if_exists",
              "sqlite:///<file> ($MLFLOW_TRACKING_URI overrides): created if missing; if present a readable file",
              _tracking_store),
    PathParam("tracking.uri (file store)", "dir", "if_exists",
              "file:<folder> or a plain path: MLflow's file store, created if missing; if present a folder",
              _tracking_folder),
)


def path_problem(path: str | Path, kind: Kind, must_exist: bool = True) -> str | None:
    """Why ``path`` cannot be used as a ``kind`` (``file`` or ``dir``), or None if it can. Readability is
    probed by opening it (``os.access`` answers yes to root for a file nobody may read)."""
    p = Path(path).expanduser()
    try:
        exists = p.exists()
        if kind == "any":  # a file or a folder: whichever it is
            kind = "dir" if exists and p.is_dir() else "file"
            expected = "file or folder"
        else:
            expected = "folder" if kind == "dir" else "file"
    except OSError as e:  # e.g. a parent folder that may not be searched
        return f"{path} cannot be accessed ({e.strerror})"
    if not exists:
        if must_exist:
            hint = " — the authored data is fetched with `dvc pull` (make data)" if Path(path).parts[:1] == ("data",) else ""
            return f"{path} does not exist (expected a {expected}){hint}"
        return None
    if kind == "file" and p.is_dir():
        return f"{path} is a folder; expected a file"
    if kind == "dir" and not p.is_dir():
        return f"{path} is a file; expected a folder"
    try:
        if kind == "dir":
            with os.scandir(p) as it:
                next(it, None)
        else:
            with open(p, "rb"):
                pass
    except OSError as e:
        return f"{path} cannot be read ({e.strerror})"
    return None


def iter_param_paths(params: Params) -> Iterator[tuple[PathParam, str, str]]:
    """``(table entry, dotted key, path)`` for every path-valued key set in ``params``."""
    for entry in PATH_PARAMS:
        for key, value in entry.values(params):
            yield entry, key, value


def check_param_paths(params: Params) -> None:
    """Raise :class:`ConfigError` at the first path-valued key whose path cannot be used (see the module)."""
    for entry, key, value in iter_param_paths(params):
        problem = path_problem(value, entry.kind, must_exist=entry.required != "if_exists")
        if problem:
            raise ConfigError(key, problem)


def describe() -> list[dict[str, Any]]:
    """The table as rows (for docs and tests)."""
    return [{"key": e.key, "kind": e.kind, "required": e.required, "when": e.when} for e in PATH_PARAMS]
