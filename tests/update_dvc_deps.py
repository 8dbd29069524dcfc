"""Regenerate the ``src/valuedrift`` entries of every stage's ``deps:`` in dvc.yaml and sweeps/dvc.yaml
from the stage's import closure (what tests/test_stage_table.py checks). Run from the repository root:
``.venv/bin/python -m tests.update_dvc_deps``. Other deps (data, models, comments) are kept."""

from __future__ import annotations

import re
from pathlib import Path

from tests import test_stage_table as t
from valuedrift.config.schema.stage_table import STAGES

ROOT = Path(".").resolve()


def cover(files: list[Path], base: Path = ROOT) -> list[str]:
    """The fewest dep entries that cover ``files``: a folder when all its modules are in, else the files;
    relative to ``base`` (the dvc.yaml's folder: sweeps/ is a DVC subproject whose paths start with ``../``)."""
    files = set(files)
    dirs = sorted(
        {p for f in files for p in f.parents if ROOT / "src/valuedrift" in (p, *p.parents)},
        key=lambda p: len(p.parts),
    )
    chosen = []
    for d in dirs:
        if any(c in d.parents or c == d for c in chosen):
            continue
        if d == ROOT / "src/valuedrift":
            continue
        allpy = {f.resolve() for f in d.rglob("*.py")}
        if allpy <= files:
            chosen.append(d)
    res = [f for f in files if not any(c in f.parents for c in chosen)] + chosen
    rel = [str(p.relative_to(ROOT)) for p in res]
    top = sorted(r for r in rel if r.count("/") == 2 and r.endswith(".py"))
    top = sorted(top, key=lambda r: (r != "src/valuedrift/cli.py", r))
    prefix = "../" * len(base.resolve().relative_to(ROOT).parts)
    return [prefix + r for r in top + sorted(r for r in rel if r not in top)]


def main() -> None:
    for fname in ("dvc.yaml", "sweeps/dvc.yaml", "counterfactual/dvc.yaml"):
        lines = Path(fname).read_text().split("\n")
        out, stage, i = [], None, 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"^  ([a-z_]+):", line)
            if m:
                stage = m.group(1)
            dm = re.match(r"^(\s+)deps:\s*$", line)
            if dm and stage in STAGES:
                out.append(line)
                ind = dm.group(1) + "  "
                i += 1
                keep = []
                while i < len(lines) and re.match("^" + ind + r"- ", lines[i]):
                    if not re.match(r"- (\.\./)*src/valuedrift", lines[i].strip()):
                        keep.append(lines[i])
                    i += 1
                files = [
                    t.module_file(mm).resolve() for mm in t.closure(STAGES[stage].module, "valuedrift.cli")
                ]
                out += keep + [f"{ind}- {d}" for d in cover(files, (ROOT / fname).parent)]
                continue
            out.append(line)
            i += 1
        Path(fname).write_text("\n".join(out))


if __name__ == "__main__":
    main()
