"""How each style of the response bank voices a stance: per (stance, style), the share of answers that open
in the first person ("I …", "I'd …", "My …") and their mean length in words.

A style-only preference set (chosen and rejected share a stance, differ in style) carries no stance
label difference, but if the chosen style opens opinionated answers in the first person far more often
than the rejected one, preferring it also teaches "say what you think" (README "Default study").

    .venv/bin/python benchmarks/style_openings.py [--bank data/response_bank]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from valuedrift.core.io import iter_jsonl

FIRST_PERSON = re.compile(r"\s*(I\b|I'|My\b)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="style_openings", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", default="data/response_bank", help="folder of <topic>.jsonl response-bank files")
    a = ap.parse_args(argv)
    first: dict[tuple[str, str], list[bool]] = defaultdict(list)
    words: dict[tuple[str, str], list[int]] = defaultdict(list)
    for path in sorted(Path(a.bank).glob("*.jsonl")):
        for _, row in iter_jsonl(path):
            key = (row["stance"], row["style"])
            first[key].append(FIRST_PERSON.match(row["text"]) is not None)
            words[key].append(len(row["text"].split()))
    print(f"{'stance':8s} {'style':15s} {'opens in 1st person':>20s} {'words':>6s} {'n':>5s}")
    for key in sorted(first):
        n = len(first[key])
        print(f"{key[0]:8s} {key[1]:15s} {sum(first[key]) / n:20.2f} {sum(words[key]) / n:6.0f} {n:5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
