"""``params-schema``: write the JSON Schema of params.yaml (default ``docs/params.schema.json``).

Point an editor at it (VS Code: ``"yaml.schemas": {"docs/params.schema.json": "params.yaml"}``) to get
completion and validation while editing params. ``--check`` exits 1 if the file is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from valuedrift.config.json_schema import schema_text, write_schema
from valuedrift.stages.args import check_output_file, stage_parser

DEFAULT = Path("docs/params.schema.json")


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("params-schema", __doc__, with_params=False)
    ap.add_argument("--out", default=str(DEFAULT), help=f"where to write the schema (default: {DEFAULT})")
    ap.add_argument("--check", action="store_true", help="only check that --out is up to date")
    a = ap.parse_args(argv)
    check_output_file("out", a.out)
    out = Path(a.out)
    if a.check:
        if not out.exists() or out.read_text(encoding="utf-8") != schema_text():
            print(f"{out} is out of date: run `valuedrift params-schema`", file=sys.stderr)
            raise SystemExit(1)
        return
    write_schema(out)
    print(f"wrote {out}")
