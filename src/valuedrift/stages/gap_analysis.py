"""``valuedrift gap-analysis``: the value gap of any preference set, per topic, as a table and a plot.

    valuedrift gap-analysis SOURCE [--format auto|synthetic|ultrafeedback|hh-rlhf] [--split S]
                            [--judge NAME] [--limit N] [--out PREFIX]

SOURCE is a local file or folder, or a hub id. Formats (UltraFeedback and HH-RLHF are read by
data/loaders/preferences.py, which also skips pairs that cannot teach a preference):

- ``synthetic``: our generated sets (``processed/preferences/<name>.jsonl``) or any file in that schema;
  stance labels come from the generator (``chosen_stance`` / ``rejected_stance``), unless ``--judge``
  asks for a judge's labels or the file has no labels;
- ``ultrafeedback``: UltraFeedback binarized (``HuggingFaceH4/ultrafeedback_binarized``, split
  ``train_prefs`` by default): ``prompt`` (text), ``chosen`` / ``rejected`` (lists of ``{role, content}``);
- ``hh-rlhf``: Anthropic HH-RLHF (``Anthropic/hh-rlhf``, split ``train``): ``chosen`` / ``rejected`` are
  whole transcripts ``"\\n\\nHuman: …\\n\\nAssistant: …"``; the question is the last Human turn, the answers
  are the last Assistant turns.

Real data carries no stance labels: a judge (``eval.judges[--judge]``, default ``eval.paper.judge``) gives
p_J(·|question, answer) for each chosen and rejected answer (stance/judges.py). Pairs without a ``topic``
field fall in topic "all". The formulas are in value_gap.py. Writes ``PREFIX.gap.csv|json|png``
(default PREFIX: ``reports/gap/<source name>``).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from valuedrift.config.load import load_params
from valuedrift.config.schema.params import Params
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import read_records
from valuedrift.data.loaders.preferences import LOADERS
from valuedrift.metrics.value_gap import (
    gap_table,
    generator_labels,
    judge_labels,
    labelled,
    overall,
    write_gap_analysis,
)
from valuedrift.stages.args import check_output_file, check_path, looks_local, stage_parser
from valuedrift.stance.judges import build_judge, check_judge, judge_probs

log = logging.getLogger(__name__)

FORMATS = ("auto", "synthetic", "ultrafeedback", "hh-rlhf")


def detect_format(source: str) -> str:
    """Our JSONL (``chosen_stance`` field) → synthetic; a list-valued ``chosen`` → ultrafeedback; an
    HH transcript (``Human: …``) → hh-rlhf. Only local JSON-Lines files are detected."""
    path = Path(source)
    if not path.is_file() or path.suffix not in (".jsonl", ".json"):
        raise ConfigError("--format", f"cannot detect the format of {source!r}; pass --format ({', '.join(FORMATS[1:])})")
    first = next(iter(read_records(path, lambda obj, p, line: obj)))
    if "chosen_stance" in first:
        return "synthetic"
    if isinstance(first.get("chosen"), list):
        return "ultrafeedback"
    if isinstance(first.get("chosen"), str) and "Human:" in first["chosen"]:
        return "hh-rlhf"
    raise ConfigError("--format", f"{source}: not a synthetic, UltraFeedback or HH-RLHF record; pass --format")


def load_pairs(source: str, fmt: str, split: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Pairs in our schema (prompt/chosen/rejected messages; stance labels for synthetic sets) from SOURCE.
    UltraFeedback and HH-RLHF go through data/loaders/preferences.py (each with its default split)."""
    if fmt == "synthetic":
        pairs = read_records(source, lambda obj, path, line: obj)
        return pairs[:limit] if limit else pairs

    return LOADERS[fmt](source, **({"split": split} if split else {}), limit=limit)


def check_judge_name(name: str, params: Params) -> None:
    """The judge exists in eval.judges and can be built (template, model path, key); nothing loads."""
    if name not in params.eval.judges:
        raise ConfigError("--judge", f"{name!r} is not defined in eval.judges ({', '.join(params.eval.judges)})")
    check_judge(params.eval.judges[name], f"eval.judges.{name}")


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("gap-analysis", __doc__, raw_doc=True)
    ap.add_argument("source", help="a preference set: local file/folder or hub id")
    ap.add_argument("--format", default="auto", choices=FORMATS)
    ap.add_argument("--split", default=None, help="hub split (ultrafeedback: train_prefs, hh-rlhf: train)")
    ap.add_argument("--judge", default=None, help="judge in eval.judges (default for real data: eval.paper.judge)")
    ap.add_argument("--limit", type=int, default=0, help="analyse only the first N pairs (0 = all)")
    ap.add_argument("--out", default=None, help="output prefix (default: reports/gap/<source name>)")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    if looks_local(a.source) or a.source.endswith((".jsonl", ".json", ".parquet")):  # else a hub id
        check_path("SOURCE", a.source, "any")
    check_output_file("out", a.out)
    params = load_params(a.params)
    if a.limit < 0:
        raise ConfigError("--limit", f"must be >= 0, got {a.limit}")
    fmt = detect_format(a.source) if a.format == "auto" else a.format
    if a.judge or fmt != "synthetic":  # real data needs a judge: check it before reading any data
        check_judge_name(a.judge or params.eval.paper.judge, params)
    pairs = load_pairs(a.source, fmt, a.split, a.limit)
    if not pairs:
        raise DataError(a.source, None, "no preference pairs")
    judge_name = a.judge or (None if labelled(pairs) else params.eval.paper.judge)
    if judge_name is not None:

        check_judge_name(judge_name, params)
        m = params.model
        judge = build_judge(judge_name, params.eval.judges[judge_name], f"eval.judges.{judge_name}", m.dtype, m.device, m.trust_remote_code)
        labels = judge_labels(pairs, partial(judge_probs, judge))
    else:
        labels = generator_labels(pairs)
    table = gap_table(labels, params.eval.bootstrap, params.eval.ci, params.seed)
    name = Path(a.source.rstrip("/")).stem or a.source.replace("/", "_")
    prefix = Path(a.out) if a.out else Path("reports") / "gap" / name
    meta = {"source": a.source, "format": fmt, "split": a.split, "labels": f"judge:{judge_name}" if judge_name else "generator"}
    paths = write_gap_analysis(table, prefix, f"{name} ({fmt}, labels: {meta['labels']})", meta)
    gap = overall(table)
    log.info("%s: %d pairs, gap (chosen − rejected) %s → %s", a.source, len(pairs), {s: round(v, 3) for s, v in gap.items()},
             ", ".join(str(p) for p in paths.values()))
