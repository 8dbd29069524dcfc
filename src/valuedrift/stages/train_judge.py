"""``train-judge``: fine-tune the classifier stance judge (``eval.judges.<name>.kind: classifier``).

    valuedrift train-judge [--data data] [--out models/judge]

Puts a 3-way head (support / neutral / oppose) on ``judge_train.base`` and trains it on (question, answer)
pairs from ``judge_train.sources``, dev-split questions only: ``bank`` (the response bank), ``annotations``
(the likelihood route's statements), ``generations`` (dev-split rows of the labelled real generations in
``judge_eval.generations``). Test-split questions never enter (checked). Seed: ``judge_train.seed``, or the
top-level ``seed`` when that is null. Writes the model, its tokenizer and ``judge_train.json`` (rows per
source and stance, the loss history, seconds) to ``--out``. See :mod:`valuedrift.stance.classifier_judge`.
"""

from __future__ import annotations

from pathlib import Path

from valuedrift.stages.args import check_flags, parse, stage_parser
from valuedrift.stance.classifier_judge import judge_training_rows, resolve_base, train_classifier

JUDGE_MODEL = Path("models/judge")


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("train-judge", __doc__, "data", raw_doc=True)
    ap.add_argument("--out", default=str(JUDGE_MODEL), help=f"folder for the trained judge (default: {JUDGE_MODEL})")
    a, params = parse(ap, argv)
    check_flags(a, {"data": "dir"}, ["out"])
    cfg = params.judge_train
    resolve_base(cfg.base)  # a missing base package or folder fails before the data is read
    seed = params.seed if cfg.seed is None else cfg.seed
    rows = judge_training_rows(Path(a.data), cfg.sources, params.judge_eval.generations)
    record = train_classifier(rows, cfg.base, cfg, seed, Path(a.out))
    per_source = ", ".join(f"{s} {sum(n.values())}" for s, n in record["rows_per_source"].items())
    print(f"judge {cfg.base}: {record['rows']} rows ({per_source}), {record['steps']} steps, "
          f"train loss {record['train_loss']:.3f}, {record['seconds']:.0f} s, seed {seed} -> {a.out}")
