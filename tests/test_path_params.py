"""Every path-valued key of params.yaml and every path argument of the CLI is checked before any work
(issue 18 item 2): a missing path, a folder where a file is expected, a file where a folder is expected,
and an unreadable one each exit with status 2 and a message naming the key or the flag, never a
traceback. Everything runs in-process through ``valuedrift.cli.main`` and fails before any model loads.

Unreadable paths: ``chmod 000``. Root reads such files anyway, so as root the CLI call runs with the
effective uid of ``nobody`` (``os.seteuid``; the real uid stays root, so it is switched back after); if the
kernel still lets it read (a retained capability) or ``seteuid`` is refused, only those cases skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from valuedrift import cli
from valuedrift.config.path_checks import PATH_PARAMS, check_param_paths
from valuedrift.config.schema.params import Params

from .conftest import ROOT, tiny_params_dict

NOBODY = 65534

for _module, _ in cli.COMMANDS.values():  # imported now, not while the effective uid is nobody's
    importlib.import_module(_module)


@pytest.fixture()
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A world-searchable scratch folder (pytest's tmp_path lies under a 0700 folder that nobody cannot
    enter); the tests run from the repository root, as ``dvc repro`` does."""
    d = Path(tempfile.mkdtemp(prefix="vd-paths-", dir="/tmp"))
    d.chmod(0o755)
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VALUEDRIFT_OPTUNA_STORAGE", raising=False)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            with contextlib.suppress(OSError):
                p.chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)


def make_file(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def unreadable(path: Path) -> Iterator[None]:
    """``path`` cannot be read by the code run inside the block (see the module docstring)."""
    path.chmod(0)
    switched = False
    try:
        if os.geteuid() == 0:
            try:
                os.seteuid(NOBODY)
                switched = True
            except OSError as e:
                pytest.skip(f"running as root and seteuid({NOBODY}) is refused ({e}): cannot make a path unreadable")
        try:
            if path.is_dir():
                os.listdir(path)
            else:
                path.open("rb").close()
        except PermissionError:
            pass
        else:
            pytest.skip("chmod 000 does not stop reads here (a capability survives seteuid): unreadable case skipped")
        yield
    finally:
        if switched:
            os.seteuid(0)
        path.chmod(0o755)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def assert_rejected(rc: int, err: str, name: str, path: Path | str) -> None:
    assert rc == 2, err
    assert name in err, f"{name!r} not named in: {err}"
    assert "Traceback" not in err
    assert str(path) in err or Path(path).name in err, err


# --------------------------------------------------------------------------------------------------
# params.yaml: every entry of config/path_checks.PATH_PARAMS
# --------------------------------------------------------------------------------------------------

CASES = ("missing", "folder_for_file", "file_for_folder", "unreadable")


def bad_path(case: str, kind: str, base: Path) -> Path | None:
    """A path that is wrong for ``kind`` in the way ``case`` says (None: the case does not apply)."""
    if case == "missing":
        return base / "no" / "such" / ("path.json" if kind == "file" else "folder")
    if case == "folder_for_file":
        return make_dir(base / "a_folder.yaml") if kind == "file" else None
    if case == "file_for_folder":
        return make_file(base / "a_file") if kind == "dir" else None
    if kind == "file":
        return make_file(base / "secret.yaml")
    return make_dir(base / "secret_folder")


def set_key(p: dict, key: str, path: Path) -> str:
    """Put ``path`` at table key ``key`` (``*`` = the first entry) in params dict ``p``; returns the dotted
    key the error must name."""
    if key == "model.name":
        p["model"]["name"] = str(path)
    elif key == "eval.reference_profiles":
        p["eval"]["reference_profiles"] = str(path)
    elif key == "eval.judges.*.template":
        p["eval"]["judges"]["smollm2"]["template"] = str(path)
        return "eval.judges.smollm2.template"
    elif key == "eval.judges.*.model":
        p["eval"]["judges"]["smollm2"]["model"] = str(path)
        return "eval.judges.smollm2.model"
    elif key == "judge_eval.labelled":
        p["judge_eval"]["labelled"] = str(path)
    elif key == "judge_eval.generations":
        p["judge_eval"]["generations"] = str(path)
    elif key == "prepare_data.preference_sets.*.lm.model":
        s = p["prepare_data"]["preference_sets"]["value_gap"]
        s.update(generator="hf", lm={"model": str(path), "judge": "smollm2"})
        return "prepare_data.preference_sets.value_gap.lm.model"
    elif key == "prepare_data.corpora.*.source.path":
        p["prepare_data"]["corpora"]["wild"] = {"source": {"kind": "jsonl", "path": str(path)}}
        return "prepare_data.corpora.wild.source.path"
    elif key == "prepare_data.preference_sets.*.source.path":
        p["prepare_data"]["preference_sets"]["uf"] = {"generator": "source", "source": {"kind": "ultrafeedback", "path": str(path)}}
        return "prepare_data.preference_sets.uf.source.path"
    elif key == "tune.reference":
        p["tune"]["reference"] = str(path)
    elif key == "tune.storage":
        p["tune"]["storage"] = f"sqlite:///{path}"
    elif key == "tracking.uri":
        p["tracking"]["uri"] = f"sqlite:///{path}"
    elif key == "tracking.uri (file store)":
        p["tracking"]["uri"] = f"file:{path}"
        return "tracking.uri"
    else:
        raise AssertionError(f"no test case for table entry {key}: add one")
    return key


PARAM_CASES = [
    pytest.param(e.key, e.kind, case, id=f"{e.key}-{case}")
    for e in PATH_PARAMS
    for case in CASES
    if (case != "missing" or e.required != "if_exists")  # created when missing, or made by an earlier stage
    and not (case == "folder_for_file" and e.kind in ("dir", "any")) and not (case == "file_for_folder" and e.kind in ("file", "any"))
]


@pytest.mark.parametrize(("key", "kind", "case"), PARAM_CASES)
def test_bad_path_in_params_exits_2_naming_the_key(key, kind, case, base, capsys):
    path = bad_path(case, kind, base)
    p = tiny_params_dict()
    dotted = set_key(p, key, path)
    params = make_file(base / "params.yaml", yaml.safe_dump(p, sort_keys=False))
    with unreadable(path) if case == "unreadable" else contextlib.nullcontext():
        rc, err = run_cli(["check-params", "--params", str(params)], capsys)
    assert_rejected(rc, err, f"params: {dotted}:", path)


def test_judge_eval_labelled_folder_is_the_reported_bug(base, capsys):
    """The issue's own example: ``judge_eval.labelled: data/`` ended in IsADirectoryError."""
    p = tiny_params_dict()
    p["judge_eval"]["labelled"] = "data/"
    params = make_file(base / "params.yaml", yaml.safe_dump(p, sort_keys=False))
    rc, err = run_cli(["judge-eval", "--params", str(params), "--no-mlflow"], capsys)
    assert rc == 2 and "params: judge_eval.labelled: data/ is a folder; expected a file" in err, err


def test_shipped_params_pass_the_path_checks(base):
    from valuedrift.config.load import load_params

    check_param_paths(load_params(ROOT / "params.yaml"))


def _string_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, default) of every str-valued field of the schema, ``*`` for mapping entries."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from _string_fields(type(default), f"{key}.")
        elif isinstance(default, dict) and default and all(dataclasses.is_dataclass(v) for v in default.values()):
            yield from _string_fields(type(next(iter(default.values()))), f"{key}.*.")
        elif isinstance(default, str) or "str" in str(f.type):
            yield key, default


# path-valued keys whose defaults do not look like paths: a bundled model name, empty, null
NOT_PATH_LOOKING = {"model.name", "prepare_data.preference_sets.*.lm.model", "tune.reference"}


def test_the_table_holds_every_path_valued_key_of_the_schema():
    table = {e.key.split(" ")[0] for e in PATH_PARAMS}
    path_like = {k for k, d in _string_fields(Params) if isinstance(d, str) and ("/" in d or d.endswith((".yaml", ".jsonl", ".json", ".db")))}
    path_like -= {k for k in path_like if k.endswith("base_url")}  # URLs of endpoints, not paths
    path_like -= {"counterfactual.run"}  # a run label <kind>/<name> under runs/, not a path
    assert path_like | NOT_PATH_LOOKING <= table, sorted(path_like | NOT_PATH_LOOKING - table)


# --------------------------------------------------------------------------------------------------
# The CLI: every path argument of every command
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Flag:
    command: str
    flag: str  # "--data", or a positional's metavar ("SOURCE")
    kind: str  # file | dir | any
    role: str  # input (must exist) | optional (may be missing) | output (created) | model (folder or hub id)


def valid_args(command: str, base: Path) -> dict[str, str]:
    """Every path argument of ``command`` set to a usable path (the failing one is then replaced)."""
    params = base / "params.yaml"
    if not params.exists():
        make_file(params, yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    model = make_file(base / "model" / "config.json", "{}").parent
    d = lambda name: str(make_dir(base / name))  # noqa: E731
    out = lambda name: str(base / "out" / name)  # noqa: E731 - outputs need not exist
    return {
        "check-params": {"--params": str(params)},
        "prepare-model": {"--params": str(params), "--out": out("models/base")},
        "prepare-data": {"--params": str(params), "--data": str(ROOT / "data"), "--out": out("processed")},
        "preferences": {"--params": str(params), "--data": str(ROOT / "data"), "--sft-run": d("runs/sft/nh"), "--out": out("processed")},
        "gap-analysis": {"SOURCE": str(make_file(base / "pairs.jsonl", "{}\n")), "--params": str(params), "--out": out("gap/pairs")},
        "trace-base": {"--params": str(params), "--base-model": str(model), "--data": str(ROOT / "data"), "--out": out("runs/base")},
        "sft": {"--params": str(params), "--base-model": str(model), "--processed": d("processed"), "--data": str(ROOT / "data"),
                "--out": out("runs/sft")},
        "po": {"--params": str(params), "--sft-runs": d("runs/sft"), "--processed": d("processed"), "--data": str(ROOT / "data"),
               "--out": out("runs/po")},
        "po --sft-model": {"--params": str(params), "--sft-model": str(model), "--processed": d("processed"),
                           "--data": str(ROOT / "data"), "--out": out("runs/po")},
        "drift": {"--params": str(params), "--runs": d("runs"), "--metrics": out("metrics"), "--plots": out("plots")},
        "report": {"--params": str(params), "--runs": d("runs"), "--metrics": d("metrics"), "--processed": d("processed"),
                   "--plots": out("plots"), "--out": out("reports")},
        "eval": {"--params": str(params), "--checkpoint": str(model), "--probes": f"v_prism:{ROOT / 'data' / 'v_prism'}",
                 "--data": str(ROOT / "data"), "--out": out("evals")},
        "judge-eval": {"--params": str(params), "--checkpoint": str(model), "--data": str(ROOT / "data"), "--out": out("judge_eval")},
        "sweep": {"--params": str(params), "--sft-model": str(model), "--out": out("tune"), "--metrics": out("metrics/sweep.json"),
                  "--plots": out("plots/sweep")},
        "profile": {"PROFILE": str(make_file(base / "profile.yaml", "seed: 1\n")), "--params": str(params)},
        "relog": {"RUN_DIR": d("runs/sft/nh"), "--params": str(params)},
        "tracking-server": {"--backend-store-uri": str(base / "out" / "mlflow.db"), "--artifacts": out("mlartifacts")},
        "params-schema": {"--out": out("schema.json")},
        "stance-mix": {"--params": str(params), "--processed": d("processed"), "--out": out("nh.stance_mix.json")},
        "train-judge": {"--params": str(params), "--data": str(ROOT / "data"), "--out": out("models/judge")},
        "blind-answers": {"--params": str(params), "--data": str(ROOT / "data"), "--checkpoint": str(model), "--out": out("gen")},
        "attribute": {"--params": str(params), "--processed": d("processed"), "--base-model": str(model), "--sft-runs": d("runs/sft"),
                      "--data": str(ROOT / "data"), "--run": d("runs/sft/nh"), "--start-model": str(model),
                      "--out": out("metrics/attribution")},
        "counterfactual-data": {"--params": str(params), "--runs": d("runs"), "--processed": d("processed"), "--base-model": str(model),
                                "--sft-runs": d("runs/sft"), "--attribution": d("metrics/attribution"), "--out": out("cf/data"),
                                "--selection": out("cf/selection.json")},
        "retrain": {"--params": str(params), "--runs": d("runs"), "--processed": d("processed"), "--base-model": str(model),
                    "--sft-runs": d("runs/sft"), "--data": str(ROOT / "data"), "--variants": d("cf/data"), "--base-eval": d("runs/base"),
                    "--out": out("cf/runs")},
        "counterfactual": {"--params": str(params), "--runs": d("runs"), "--variant-runs": d("cf/runs"),
                           "--selection": str(make_file(base / "cf" / "selection.json", "{}")), "--out": out("cf/metrics")},
        "instrument": {"--params": str(params), "--data": str(ROOT / "data"), "--runs": d("runs"), "--base-model": str(model),
                       "--plots": out("plots"), "--judge-eval": d("metrics/judge_eval"), "--out": out("metrics/instrument")},
    }[command]


EXTRA = {  # non-path arguments a command needs
    "po": ["--algorithm", "dpo", "--preference-set", "value_gap"],
    "eval": ["--no-mlflow"],
    "trace-base": ["--no-mlflow"],
    "judge-eval": ["--no-mlflow"],
    "params-schema": ["--check"],
    "stance-mix": ["--corpus", "neutral_heavy"],
    "attribute": ["--no-mlflow"],
    "counterfactual": ["--no-mlflow"],
}

FLAGS = [
    Flag("check-params", "--params", "file", "input"),
    Flag("prepare-model", "--params", "file", "input"),
    Flag("prepare-model", "--out", "dir", "output"),
    Flag("prepare-data", "--params", "file", "input"),
    Flag("prepare-data", "--data", "dir", "input"),
    Flag("prepare-data", "--out", "dir", "output"),
    Flag("preferences", "--params", "file", "input"),
    Flag("preferences", "--data", "dir", "input"),
    Flag("preferences", "--sft-run", "dir", "optional"),
    Flag("preferences", "--out", "dir", "output"),
    Flag("gap-analysis", "SOURCE", "any", "input"),
    Flag("gap-analysis", "--params", "file", "input"),
    Flag("gap-analysis", "--out", "file", "output"),
    Flag("trace-base", "--params", "file", "input"),
    Flag("trace-base", "--base-model", "dir", "input"),
    Flag("trace-base", "--data", "dir", "input"),
    Flag("trace-base", "--out", "dir", "output"),
    Flag("sft", "--params", "file", "input"),
    Flag("sft", "--base-model", "dir", "input"),
    Flag("sft", "--processed", "dir", "input"),
    Flag("sft", "--data", "dir", "input"),
    Flag("sft", "--out", "dir", "output"),
    Flag("po", "--params", "file", "input"),
    Flag("po", "--sft-runs", "dir", "input"),
    Flag("po", "--processed", "dir", "input"),
    Flag("po", "--data", "dir", "input"),
    Flag("po", "--out", "dir", "output"),
    Flag("po --sft-model", "--sft-model", "dir", "model"),
    Flag("drift", "--params", "file", "input"),
    Flag("drift", "--runs", "dir", "input"),
    Flag("drift", "--metrics", "dir", "output"),
    Flag("drift", "--plots", "dir", "output"),
    Flag("report", "--params", "file", "input"),
    Flag("report", "--runs", "dir", "input"),
    Flag("report", "--metrics", "dir", "input"),
    Flag("report", "--processed", "dir", "input"),
    Flag("report", "--plots", "dir", "output"),
    Flag("report", "--out", "dir", "output"),
    Flag("eval", "--params", "file", "input"),
    Flag("eval", "--checkpoint", "dir", "model"),
    Flag("eval", "--probes", "any", "input"),
    Flag("eval", "--data", "dir", "input"),
    Flag("eval", "--out", "dir", "output"),
    Flag("judge-eval", "--params", "file", "input"),
    Flag("judge-eval", "--checkpoint", "dir", "model"),
    Flag("judge-eval", "--data", "dir", "input"),
    Flag("judge-eval", "--out", "dir", "output"),
    Flag("sweep", "--params", "file", "input"),
    Flag("sweep", "--sft-model", "dir", "model"),
    Flag("sweep", "--out", "dir", "output"),
    Flag("sweep", "--metrics", "file", "output"),
    Flag("sweep", "--plots", "dir", "output"),
    Flag("profile", "PROFILE", "file", "input"),
    Flag("profile", "--params", "file", "input"),
    Flag("relog", "RUN_DIR", "dir", "input"),
    Flag("relog", "--params", "file", "optional"),
    Flag("tracking-server", "--backend-store-uri", "file", "output"),
    Flag("tracking-server", "--artifacts", "dir", "output"),
    Flag("params-schema", "--out", "file", "output"),
    Flag("stance-mix", "--params", "file", "input"),
    Flag("stance-mix", "--processed", "dir", "input"),
    Flag("stance-mix", "--out", "file", "output"),
    Flag("train-judge", "--params", "file", "input"),
    Flag("train-judge", "--data", "dir", "input"),
    Flag("train-judge", "--out", "dir", "output"),
    Flag("blind-answers", "--params", "file", "input"),
    Flag("blind-answers", "--data", "dir", "input"),
    Flag("blind-answers", "--checkpoint", "dir", "model"),
    Flag("blind-answers", "--out", "dir", "output"),
    Flag("attribute", "--params", "file", "input"),
    Flag("attribute", "--processed", "dir", "input"),
    Flag("attribute", "--base-model", "dir", "input"),
    Flag("attribute", "--sft-runs", "dir", "optional"),
    Flag("attribute", "--data", "dir", "input"),
    Flag("attribute", "--run", "dir", "input"),
    Flag("attribute", "--start-model", "dir", "input"),
    Flag("attribute", "--out", "dir", "output"),
    Flag("counterfactual-data", "--params", "file", "input"),
    Flag("counterfactual-data", "--runs", "dir", "input"),
    Flag("counterfactual-data", "--processed", "dir", "input"),
    Flag("counterfactual-data", "--base-model", "dir", "input"),
    Flag("counterfactual-data", "--sft-runs", "dir", "optional"),
    Flag("counterfactual-data", "--attribution", "dir", "input"),
    Flag("counterfactual-data", "--out", "dir", "output"),
    Flag("counterfactual-data", "--selection", "file", "output"),
    Flag("retrain", "--params", "file", "input"),
    Flag("retrain", "--runs", "dir", "input"),
    Flag("retrain", "--processed", "dir", "input"),
    Flag("retrain", "--base-model", "dir", "input"),
    Flag("retrain", "--sft-runs", "dir", "optional"),
    Flag("retrain", "--data", "dir", "input"),
    Flag("retrain", "--variants", "dir", "input"),
    Flag("retrain", "--base-eval", "dir", "optional"),
    Flag("retrain", "--out", "dir", "output"),
    Flag("counterfactual", "--params", "file", "input"),
    Flag("counterfactual", "--runs", "dir", "input"),
    Flag("counterfactual", "--variant-runs", "dir", "input"),
    Flag("counterfactual", "--selection", "file", "input"),
    Flag("counterfactual", "--out", "dir", "output"),
    Flag("instrument", "--params", "file", "input"),
    Flag("instrument", "--data", "dir", "input"),
    Flag("instrument", "--runs", "dir", "input"),
    Flag("instrument", "--base-model", "dir", "input"),
    Flag("instrument", "--judge-eval", "dir", "input"),
    Flag("instrument", "--plots", "dir", "output"),
    Flag("instrument", "--out", "dir", "output"),
]


def flag_cases() -> Iterator[object]:
    for f in FLAGS:
        cases = {"input": CASES, "model": CASES, "optional": CASES[1:], "output": CASES[1:3]}[f.role]
        for case in cases:
            if f.kind == "any" and case in ("folder_for_file", "file_for_folder"):
                continue  # a file or a folder will do
            if (case == "folder_for_file" and f.kind == "dir") or (case == "file_for_folder" and f.kind == "file"):
                continue
            yield pytest.param(f, case, id=f"{f.command}-{f.flag}-{case}")


def build_argv(command: str, args: dict[str, str]) -> list[str]:
    name = command.split(" ")[0]
    argv = [name, *[v for k, v in args.items() if not k.startswith("--")]]
    for k, v in args.items():
        if k.startswith("--"):
            if k == "--checkpoint" and name == "blind-answers":
                v = f"base={v}"  # NAME=FOLDER
            argv += [k, v if k != "--backend-store-uri" else f"sqlite:///{v}"]
    return argv + EXTRA.get(name, [])


@pytest.mark.parametrize(("flag", "case"), list(flag_cases()))
def test_bad_path_argument_exits_2_naming_the_flag(flag: Flag, case: str, base: Path, capsys):
    args = valid_args(flag.command, base)
    kind = "file" if flag.kind == "any" else flag.kind
    path = bad_path(case, kind, base / "bad")
    if flag.flag == "--probes":
        args[flag.flag] = f"v_prism:{path}"
    else:
        args[flag.flag] = str(path)
    argv = build_argv(flag.command, args)
    with unreadable(path) if case == "unreadable" else contextlib.nullcontext():
        rc, err = run_cli(argv, capsys)
    assert_rejected(rc, err, flag.flag, path)


def test_every_path_flag_of_the_cli_is_covered():
    """Each ``add_argument`` of a path-like option in stages/*.py has a row in FLAGS (and so its cases)."""
    import argparse

    covered = {(f.command.split(" ")[0], f.flag) for f in FLAGS}
    path_words = ("path", "folder", "file", "dir", "model", "checkpoint", "params", "runs", "data", "processed",
                  "plots", "metrics", "out", "store", "artifacts", "source", "profile", "probes", "sft")
    not_paths = {"--format", "--split", "--judge", "--judges", "--route", "--corpus", "--set", "--algorithm",
                 "--preference-set", "--host", "--port", "--uri", "--limit", "--probes-per-topic", "--workers",
                 "--worker-index", "--n-trials"}
    missing = []
    for name, (module, _) in cli.COMMANDS.items():
        captured: list[argparse.ArgumentParser] = []
        original = argparse.ArgumentParser.parse_args

        def grab(self, args=None, namespace=None, _c=captured):
            _c.append(self)
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign]
        try:
            with contextlib.suppress(SystemExit):
                importlib.import_module(module).main([])
        finally:
            argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        for action in captured[0]._actions if captured else []:
            if isinstance(action, argparse._HelpAction | argparse._StoreTrueAction):
                continue
            opt = action.option_strings[0] if action.option_strings else (action.metavar or action.dest).upper()
            if opt in not_paths or not any(w in opt.lower() for w in path_words):
                continue
            if (name, opt) not in covered:
                missing.append(f"{name} {opt}")
    assert not missing, f"path arguments without a test case: {missing}"


