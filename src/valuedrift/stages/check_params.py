"""``check-params``: parse and validate params.yaml, print the resolved values, and exit (0 = valid)."""

from __future__ import annotations

import json

from valuedrift.config.load import load_params
from valuedrift.config.schema.parse import to_dict
from valuedrift.stages.args import check_path, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("check-params", __doc__)
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    print(json.dumps(to_dict(load_params(a.params)), indent=2))
