"""``prepare_data`` stage: validate the authored data and compose the SFT corpora.

Reads ``data/`` (versioned by data.dvc); writes ``processed/sft/<corpus>.jsonl`` for every corpus in
``prepare_data.corpora`` and ``processed/sft/summary.json`` (rows and stance mix per corpus). Every data
file is validated first; a bad record stops the stage with file:line before anything is written.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from valuedrift.config.load import load_params
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import write_json, write_jsonl
from valuedrift.data.bank import load_bank, load_general
from valuedrift.data.consistency import check_bank_questions
from valuedrift.data.corpora import build_sft_corpus
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.probes import QUESTIONS_FILE, load_probe_bank, load_questions
from valuedrift.stages.args import check_flags, check_path, stage_parser
from valuedrift.stance.capability import heldout_general_ids

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("prepare-data", __doc__, "data")
    ap.add_argument("--out", default="processed")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_flags(a, {"data": "dir"}, ["out"])
    params = load_params(a.params)
    data = Path(a.data)
    # validate everything before writing anything
    questions = load_questions(data / QUESTIONS_FILE)
    probes = load_probe_bank(data)
    check_bank_questions(data, questions)  # bank rows: existing dev questions of the file's topic
    bank = load_bank(data)
    general = load_general(data)
    held_out = heldout_general_ids(general, params.eval.capability_rows, params.seed)
    general = [g for g in general if g["id"] not in held_out]  # reserved for the capability probe
    corpora = {}
    for i, (name, mix) in enumerate(sorted(params.prepare_data.corpora.items())):
        try:
            rows = build_sft_corpus(mix, questions, bank, general, params.seed + i)
        except ValueError as e:  # the corpus asks for more than the data holds
            raise ConfigError(f"prepare_data.corpora.{name}", str(e)) from e
        assert_no_leaks(rows, questions, f"corpus {name}")
        corpora[name] = rows
    summary = {"probes": len(probes), "bank_questions": len(bank.question_ids()), "corpora": {}}
    for name, rows in corpora.items():
        write_jsonl(Path(a.out) / "sft" / f"{name}.jsonl", rows)
        stances = Counter(r["stance"] for r in rows if r["kind"] == "value")
        n_value = sum(stances.values())
        summary["corpora"][name] = {
            "rows": len(rows),
            "value_rows": n_value,
            "stance_mix": {s: stances[s] / n_value if n_value else 0.0 for s in ("support", "neutral", "oppose")},
        }
        log.info("corpus %s: %d rows, %d value-laden, mix %s", name, len(rows), n_value, dict(stances))
    write_json(Path(a.out) / "sft" / "summary.json", summary)
