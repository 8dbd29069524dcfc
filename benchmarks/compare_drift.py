"""Compare the working tree's metrics/drift_summary.csv with the one committed at a git revision.

Used to check that a refactor changed no result: ``python benchmarks/compare_drift.py HEAD~1`` after a
from-scratch ``dvc repro`` prints the row match and the largest absolute difference per numeric column;
exit status 1 when a row is missing or a difference exceeds ``--tol`` (default 1e-6).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import numpy as np
import pandas as pd

KEYS = ["phase", "split", "topic", "stance", "ci_kind"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ref", nargs="?", default="HEAD", help="git revision whose committed table is the baseline")
    ap.add_argument("--path", default="metrics/drift_summary.csv")
    ap.add_argument("--tol", type=float, default=1e-6)
    a = ap.parse_args(argv)
    shown = subprocess.run(["git", "show", f"{a.ref}:{a.path}"], capture_output=True, text=True, check=True).stdout
    old, new = pd.read_csv(io.StringIO(shown)), pd.read_csv(a.path)
    m = old.merge(new, on=KEYS, suffixes=("_old", "_new"), how="outer", indicator=True)
    counts = m["_merge"].value_counts().to_dict()
    worst = {}
    for c in (c for c in old.columns if c not in KEYS):
        x, y = m[f"{c}_old"].to_numpy(float), m[f"{c}_new"].to_numpy(float)
        worst[c] = float(np.nanmax(np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))))
    print(f"rows: {len(old)} at {a.ref}, {len(new)} now; matched {counts.get('both', 0)}")
    for c, d in worst.items():
        print(f"  {c:<22} max |diff| {d:.2e}")
    ok = counts.get("both", 0) == len(old) == len(new) and max(worst.values()) <= a.tol
    print(f"max |diff| {max(worst.values()):.2e}: {'within' if ok else 'OUTSIDE'} {a.tol:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
