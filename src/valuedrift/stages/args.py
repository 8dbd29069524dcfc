"""The command-line flags that stages share: ``--params`` and the standard path flags.

Each path flag has one name, one default (:mod:`valuedrift.core.paths`) and one help text here, so every
stage spells it the same way; a stage adds only the flags it uses.
"""

from __future__ import annotations

import argparse
import errno
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from valuedrift.config.load import load_params
from valuedrift.config.path_checks import looks_local, path_problem
from valuedrift.config.schema.params import Params
from valuedrift.core import paths
from valuedrift.core.errors import ConfigError, DataError

# flag -> (default, help)
PATH_FLAGS: dict[str, tuple[Path, str]] = {
    "data": (paths.DATA, "authored data folder (versioned by data.dvc)"),
    "processed": (paths.PROCESSED, "built training data (prepare_data, preferences)"),
    "base-model": (paths.BASE_MODEL, "the prepared start model (prepare_model)"),
    "runs": (paths.RUNS, "traced training runs"),
    "sft-runs": (paths.SFT_RUNS, "where the SFT runs are"),
    "plots": (paths.PLOTS, "plot output folder"),
}


def stage_parser(
    command: str, doc: str | None, *path_flags: str, with_params: bool = True, raw_doc: bool = False
) -> argparse.ArgumentParser:
    """An argument parser for ``valuedrift <command>`` with ``--params`` (unless the command reads no params)
    and the named path flags; ``raw_doc`` keeps the docstring's line breaks in ``--help``."""
    fmt = argparse.RawDescriptionHelpFormatter if raw_doc else argparse.HelpFormatter
    ap = argparse.ArgumentParser(prog=f"valuedrift {command}", description=doc, formatter_class=fmt)
    if with_params:
        ap.add_argument("--params", default=str(paths.PARAMS), help="params file (default: params.yaml)")
    for flag in path_flags:
        default, help_ = PATH_FLAGS[flag]
        ap.add_argument(f"--{flag}", default=str(default), help=f"{help_} (default: {default})")
    return ap


def check_path(flag: str, path: str | Path | None, kind: Literal["file", "dir", "any"] = "file",
               must_exist: bool = True) -> None:
    """Fail before any work when the path given to ``flag`` cannot be used: missing (if ``must_exist``), a
    folder where a file is expected, a file where a folder is expected, or unreadable.

    ``flag`` is the option name without dashes (error key ``--<flag>``: :class:`ConfigError`), or a
    positional argument's metavar in capitals (``SOURCE``, ``RUN_DIR``: :class:`DataError` on the path).
    ``None`` (an optional flag not given) passes. ``kind="any"``: a file or a folder.
    """
    if path is None:
        return
    if kind == "any":
        kind = "dir" if Path(path).is_dir() else "file"
    problem = path_problem(path, kind, must_exist)
    if problem is None:
        return
    if flag.isupper():
        raise DataError(path, None, f"{flag} argument: {problem}")
    raise ConfigError(f"--{flag}", problem)


def check_model_path(flag: str, spec: str | None) -> None:
    """A model flag (``--checkpoint``, ``--sft-model``) that reads as a local path must be a readable
    folder; a hub id (``org/name``) is checked when it loads."""
    if spec is not None and looks_local(spec):
        check_path(flag, spec, "dir")


def check_probes_flag(spec: str | None, flag: str = "probes") -> None:
    """``--probes <kind>:<hub id or path>``: a source that reads as a local path must be a readable file or
    folder (a hub id ``org/name`` is fetched when it loads)."""
    if spec is None:
        return
    kind, sep, source = spec.partition(":")
    if not sep or not source:
        raise ConfigError(f"--{flag}", f"{spec!r} must be <kind>:<hub id or path>")
    if looks_local(source) or source.endswith((".jsonl", ".json", ".csv", ".parquet")):
        check_path(flag, source, "any")


def check_output_file(flag: str, path: str | Path | None) -> None:
    """An output file: it may be missing, but not a folder, and its parent must not be a file."""
    if path is None:
        return
    check_path(flag, path, "file", must_exist=False)
    parent = Path(path).parent
    problem = path_problem(parent, "dir", must_exist=False) if str(parent) not in ("", ".") else None
    if problem:
        raise ConfigError(f"--{flag}", f"cannot write {path}: {problem}")


def check_flags(a: argparse.Namespace, inputs: dict[str, str], outputs: Sequence[str] = ()) -> None:
    """``inputs``: flag -> kind (must exist); ``outputs``: folder flags that may be missing but not be files."""
    for flag, kind in inputs.items():
        check_path(flag, getattr(a, flag.replace("-", "_")), kind)  # type: ignore[arg-type]
    for flag in outputs:
        check_path(flag, getattr(a, flag.replace("-", "_")), "dir", must_exist=False)


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, Params]:
    """Parse ``argv``, check ``--params`` and load it (validated). The stage checks its other path flags
    (:func:`check_flags`) right after."""
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    return a, load_params(a.params)


def os_error_message(e: OSError, argv: Sequence[str]) -> str:
    """A one-line message for an OS error on a user path that escaped the checks: names the flag whose
    value is (or contains) the path, when one does."""
    name = str(e.filename) if e.filename is not None else ""
    what = f"{name}: {e.strerror or e}" if name else str(e)
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        flag = arg.split("=", 1)[0] if "=" in arg else (argv[i - 1] if i and argv[i - 1].startswith("--") else None)
        if name and value and flag and flag.startswith("--") and (name == value or name.startswith(value.rstrip("/") + "/")):
            return f"{flag}: {what}"
    return f"{what} (a path given on the command line or in params.yaml)"


def disk_full(e: BaseException) -> str | None:
    """If ``e`` (or an exception it was raised from) is a full disk or an exceeded quota, what was being
    written; else None. Also matches the Rust I/O error text that safetensors raises (``StorageFull``)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(cur.filename) if cur.filename else cur.strerror or str(cur)
        text = str(cur)
        if "No space left on device" in text or "StorageFull" in text or "QuotaExceeded" in text:
            return text.splitlines()[0][:300] if text else type(cur).__name__
        cur = cur.__cause__ or cur.__context__
    return None
