"""``prepare_data`` stage: validate the authored data and compose the SFT corpora.

Reads ``data/`` (versioned by data.dvc); writes ``processed/sft/<corpus>.jsonl`` for every corpus in
``prepare_data.corpora`` and ``processed/sft/summary.json`` (rows and stance mix per corpus). Every data
file is validated first; a bad record stops the stage with file:line before anything is written.

A corpus with a ``source`` block is read from that dataset instead (data/sources.py): its summary entry
adds ``source`` (kind, path, revision, split, counts) and ``digest``, the MLflow dataset digest of the rows
(the one the sft run logs as its input); its ``stance_mix`` covers the rows that carry a stance label
(null when none do: ``valuedrift stance-mix`` measures it with a judge).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from valuedrift.config.load import load_params
from valuedrift.core.errors import ConfigError
from valuedrift.core.io import write_json, write_jsonl
from valuedrift.core.paths import corpus_file
from valuedrift.data.bank import load_bank, load_general
from valuedrift.data.consistency import check_bank_questions
from valuedrift.data.corpora import build_sft_corpus
from valuedrift.data.frames import corpus_frame, frame_digest
from valuedrift.data.leaks import assert_no_leaks
from valuedrift.data.probes import QUESTIONS_FILE, load_probe_bank, load_questions
from valuedrift.data.sources import load_source
from valuedrift.stages.args import check_flags, check_path, stage_parser
from valuedrift.stance.capability import heldout_general_ids

log = logging.getLogger(__name__)


def stance_summary(rows: list[dict[str, Any]], labelled: str) -> dict[str, Any]:
    """Row count and the stance mix of the rows with a label (``labelled`` names that count's key)."""
    stances = Counter(r["stance"] for r in rows if r.get("stance") is not None)
    n = sum(stances.values())
    mix = {s: stances[s] / n if n else 0.0 for s in ("support", "neutral", "oppose")}
    return {"rows": len(rows), labelled: n, "stance_mix": mix if n or labelled == "value_rows" else None}


def source_summary(rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Summary entry of a corpus read from a dataset: stance mix of labelled rows, the source, the digest."""
    return {**stance_summary(rows, "labelled_rows"), "source": info, "digest": frame_digest(corpus_frame(rows))}


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
    corpora, sources = {}, {}
    for i, (name, mix) in enumerate(sorted(params.prepare_data.corpora.items())):
        key = f"prepare_data.corpora.{name}"
        if mix.source is not None:
            loaded = load_source(mix.source, "sft", f"{key}.source", params.seed + i, questions)
            corpora[name], sources[name] = loaded.rows, loaded.info
            continue
        try:
            rows = build_sft_corpus(mix, questions, bank, general, params.seed + i)
        except ValueError as e:  # the corpus asks for more than the data holds
            raise ConfigError(key, str(e)) from e
        assert_no_leaks(rows, questions, f"corpus {name}")
        corpora[name] = rows
    summary: dict[str, Any] = {"probes": len(probes), "bank_questions": len(bank.question_ids()), "corpora": {}}
    for name, rows in corpora.items():
        data_file = corpus_file(Path(a.out), name)
        write_jsonl(data_file, rows)
        entry = source_summary(rows, sources[name]) if name in sources else stance_summary(rows, "value_rows")
        summary["corpora"][name] = entry
        log.info("corpus %s: %d rows, stance mix %s", name, len(rows), entry["stance_mix"])
    write_json(Path(a.out) / "sft" / "summary.json", summary)
