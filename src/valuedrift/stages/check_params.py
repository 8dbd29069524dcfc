"""``check-params``: parse and validate params.yaml, print the resolved values, and exit (0 = valid)."""

from __future__ import annotations

import argparse
import json

from valuedrift.config.load import load_params
from valuedrift.config.schema.parse import to_dict


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="valuedrift check-params", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    print(json.dumps(to_dict(load_params(a.params)), indent=2))
