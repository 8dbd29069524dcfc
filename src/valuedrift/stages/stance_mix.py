"""``valuedrift stance-mix``: the stance mix of an SFT corpus as a judge labels its responses.

    valuedrift stance-mix --corpus NAME [--judge NAME] [--limit N] [--processed processed] [--out FILE]

Reads ``processed/sft/<corpus>.jsonl`` (built by prepare_data, authored or from a dataset), labels every
response with a judge from ``eval.judges`` (``--judge``, else the corpus' ``source.judge``, else
``eval.paper.judge``; stance/judges.py) and writes ``processed/sft/<corpus>.stance_mix.json`` (``--out``):
the share of rows labelled support / neutral / oppose and the mean p_J, over all rows and per row kind;
for rows with an authored stance label also the authored mix and the judge's agreement with the labels
(metrics/stance_mix.py for the formulas). ``--limit N`` judges only the first N rows (0 = all).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import read_records, write_json
from valuedrift.core.paths import corpus_file
from valuedrift.metrics.stance_mix import corpus_stance_mix
from valuedrift.stages.args import check_flags, check_output_file, parse, stage_parser
from valuedrift.stance.judges import build_judge, check_judge, judge_probs

log = logging.getLogger(__name__)
BOOKKEEPING = Path(".valuedrift") / "stance_mix"  # MLflow run bookkeeping (git-ignored), not beside the output


def log_mix(params: Any, record: dict[str, Any], out: Path) -> None:
    """The mix as an MLflow run ``stance-mix-<corpus>``: shares as metrics (``mix/<kind>/<stance>``), the
    judge and data as params, the JSON as an artifact."""
    from valuedrift.tracking import fresh_run

    parts = {"all": record["all"], **record["by_kind"]}
    metrics = {f"mix/{kind}/{s}": v for kind, part in parts.items() for s, v in part["share"].items()}
    agreement = (record.get("labelled") or {}).get("agreement") or {}
    metrics.update({f"agreement/{k}": v for k, v in agreement.items() if isinstance(v, int | float)})
    run_params = {"corpus": record["corpus"], "judge": record["judge"], "data": record["data"], "source_kind": record["source_kind"]}
    tags = {"stage": "stance_mix", "algorithm": "stance_mix", "corpus": record["corpus"]}
    with fresh_run(params.tracking, BOOKKEEPING / record["corpus"], f"stance-mix-{record['corpus']}", tags, run_params) as tracker:
        tracker.log_metrics(metrics, step=0)
        tracker.log_artifact(out, "stance_mix")


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("stance-mix", __doc__, "processed", raw_doc=True)
    ap.add_argument("--corpus", required=True, help="a corpus of prepare_data.corpora")
    ap.add_argument("--judge", default=None, help="judge in eval.judges (default: the corpus' source.judge, else eval.paper.judge)")
    ap.add_argument("--limit", type=int, default=0, help="judge only the first N rows (0 = all)")
    ap.add_argument("--out", default=None, help="output file (default: processed/sft/<corpus>.stance_mix.json)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log the mix as an MLflow run (stance-mix-<corpus>)")
    a, params = parse(ap, argv)
    check_flags(a, {"processed": "dir"})
    check_output_file("out", a.out)
    corpora = params.prepare_data.corpora
    if a.corpus not in corpora:
        raise ConfigError("--corpus", f"{a.corpus!r} is not in prepare_data.corpora ({', '.join(corpora)})")
    if a.limit < 0:
        raise ConfigError("--limit", f"must be >= 0, got {a.limit}")
    source = corpora[a.corpus].source
    name = a.judge or (source.judge if source is not None and source.judge else params.eval.paper.judge)
    if name not in params.eval.judges:
        raise ConfigError("--judge", f"{name!r} is not defined in eval.judges ({', '.join(params.eval.judges)})")
    check_judge(params.eval.judges[name], f"eval.judges.{name}")  # before reading data or loading a model
    data_file = corpus_file(Path(a.processed), a.corpus)
    if not data_file.is_file():
        raise DataError(data_file, None, "corpus not built; run `valuedrift prepare-data` first")
    rows = read_records(data_file, lambda obj, path, line: obj)
    rows = rows[: a.limit] if a.limit else rows
    m = params.model
    judge = build_judge(name, params.eval.judges[name], f"eval.judges.{name}", m.dtype, m.device, m.trust_remote_code)
    mix = corpus_stance_mix(rows, partial(judge_probs, judge))
    out = Path(a.out) if a.out else data_file.with_suffix(".stance_mix.json")
    record = {"corpus": a.corpus, "judge": name, "data": str(data_file), "source_kind": source.kind if source is not None else None, **mix}
    write_json(out, record)
    if not a.no_mlflow:
        log_mix(params, record, out)
    log.info("%s: judged mix %s over %d rows (judge %s) → %s", a.corpus, {s: round(v, 3) for s, v in mix["all"]["share"].items()},
             len(rows), name, out)
