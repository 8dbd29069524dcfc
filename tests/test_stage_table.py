"""The stage table (valuedrift.config.schema.stage_table) against dvc.yaml / sweeps/dvc.yaml and params.yaml.

(a) each stage's ``params:`` equal the table's keys; (b) every module in the stage's import closure under
src/valuedrift (the stage module plus valuedrift.cli, through ``import``/``from … import`` anywhere in a
module, submodules imported by name, and parent packages' ``__init__``) is covered by its ``deps:``;
(c) every table key names a real params key.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from valuedrift.config.schema.stage_table import STAGES, fingerprint_keys

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = "valuedrift"


def stage_body(name: str) -> dict:
    stage = yaml.safe_load((ROOT / STAGES[name].dvc_file).read_text())["stages"][name]
    return stage["do"] if "foreach" in stage else stage


def module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


@cache
def direct_imports(module: str) -> frozenset[str]:
    """Modules of ours that ``module`` imports (any scope), plus its parent packages."""
    f = module_file(module)
    assert f is not None, module
    found: set[str] = set()
    parts = module.split(".")
    found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    is_pkg = f.name == "__init__.py"
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = parts if is_pkg else parts[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] != PKG:
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}"))
    return frozenset(m for m in found if module_file(m))


def closure(*roots: str) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(direct_imports(m) - seen)
    return seen


@cache
def params_yaml() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def substitutions(key: str) -> list[str]:
    """``key`` with ``${item.*}`` / ``${key}`` replaced by each real name from params.yaml."""
    p = params_yaml()
    foreach = "corpora" if key.startswith("prepare_data.corpora.${key}") else "preference_sets"  # the stage's foreach
    names = {"${key}": list(p["prepare_data"][foreach]), "${item.algorithm}": list(p["po"]["algorithms"]),
             "${item.corpus}": list(p["sft"]["corpora"]), "${item.pref}": list(p["po"]["preference_sets"])}
    for var, values in names.items():
        if var in key:
            return [k for v in values for k in substitutions(key.replace(var, v))]
    assert "${" not in key, f"no substitution known for {key!r}"
    return [key]


def resolves(key: str) -> bool:
    node = params_yaml()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return documented(key)
        node = node[part]
    return True


def documented(key: str) -> bool:
    """A key params.yaml leaves at its default: a field of the params schema."""
    import dataclasses

    from valuedrift.config.schema.params import Params

    cls = Params
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return False
        t = fields[part].type
        cls = getattr(__import__("valuedrift.config.schema.params", fromlist=["x"]), t, None) if isinstance(t, str) else t
    return True


def listed_params(name: str) -> list[str]:
    """A stage's ``params:`` keys: plain keys, or (a DVC subproject such as sweeps/) keys of ``../params.yaml``."""
    out = []
    for entry in stage_body(name).get("params", []):
        if isinstance(entry, dict):
            assert list(entry) == ["../params.yaml"], f"{name}: params from another file than params.yaml: {entry}"
            out += entry["../params.yaml"]
        else:
            out.append(entry)
    return out


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_params_equal_table(name: str) -> None:
    listed = listed_params(name)
    assert all(isinstance(k, str) for k in listed), f"{name}: only plain params keys are supported: {listed}"
    table = set(fingerprint_keys(name))
    extra, missing = sorted(set(listed) - table), sorted(table - set(listed))
    assert not extra and not missing, (
        f"{STAGES[name].dvc_file} stage {name}: params not in the stage table: {extra}; table keys not listed: {missing}"
    )


@pytest.mark.parametrize("name", list(STAGES))
def test_deps_cover_import_closure(name: str) -> None:
    stage = STAGES[name]
    dvc_dir = (ROOT / stage.dvc_file).parent
    wdir = (dvc_dir / yaml.safe_load((ROOT / stage.dvc_file).read_text())["stages"][name].get("wdir", ".")).resolve()
    deps = [str(d) for d in stage_body(name).get("deps", [])]
    covered = {(wdir / d).resolve() for d in deps}
    uncovered = []
    for m in sorted(closure(stage.module, f"{PKG}.cli")):
        f = module_file(m).resolve()
        if not any(p in covered for p in (f, *f.parents)):
            uncovered.append(str(f.relative_to(ROOT)))
    assert not uncovered, f"{stage.dvc_file} stage {name}: import closure files not covered by deps: {uncovered}"


@pytest.mark.parametrize("name", list(STAGES))
def test_table_keys_are_params_keys(name: str) -> None:
    bad = [k for key in STAGES[name].params for k in substitutions(key) if not resolves(k)]
    assert not bad, f"stage {name}: not a params key: {bad}"


def test_closure_follows_submodule_imports() -> None:
    assert f"{PKG}.stages.args" in closure(f"{PKG}.stages.sft")
    assert f"{PKG}.core.paths" in direct_imports(f"{PKG}.stages.args")  # `from valuedrift.core import paths`
    assert f"{PKG}.stages" in direct_imports(f"{PKG}.stages.sft")  # parent package's __init__
    assert re.fullmatch(r"[\w.]+", STAGES["sft"].module)
