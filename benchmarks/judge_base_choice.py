"""Which base for the classifier stance judge: all-MiniLM-L6-v2 (``minilm``) or the bundled SmolLM2-135M?

Both get a new 3-way head and the same training budget (``--epochs``, default 1; same learning rate, batch
size, seed) on the ``bank`` + ``annotations`` rows of every dev topic except ``--heldout`` (default
``work``), and are scored on that held-out dev topic's rows: accuracy and macro-F1 = mean_s F1_s
(valuedrift.metrics.agreement.classification_metrics), overall and per source. Reported with the training
seconds and the scoring seconds. Only dev-split material is read (judge_training_rows checks it); the
test split is never touched.

A base can be trained on a seeded random subset of its rows (``--max-rows smollm2=800``; the same seed
gives every base the same subset of the same size) and the held-out rows can be subsampled
(``--eval-rows``) when the CPU budget is short; the sizes are reported with the result.

Run: ``.venv/bin/python benchmarks/judge_base_choice.py`` (SmolLM2 from ``--smollm2``, default models/base).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from valuedrift.config.schema.evaluation import JudgeTrainConfig  # noqa: E402
from valuedrift.core.vocab import STANCES  # noqa: E402
from valuedrift.metrics.agreement import classification_metrics  # noqa: E402
from valuedrift.stance.classifier_judge import judge_training_rows, load_classifier_judge, train_classifier  # noqa: E402


def split_rows(rows: list[dict[str, Any]], heldout: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows: every other dev topic, eval rows: the held-out dev topic)."""
    train = [r for r in rows if r["topic"] != heldout]
    held = [r for r in rows if r["topic"] == heldout]
    if not held:
        raise SystemExit(f"no rows of dev topic {heldout!r}")
    return train, held


def subset(rows: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded random subset of ``n`` rows (all of them when ``n`` is None or not smaller)."""
    if n is None or n >= len(rows):
        return rows
    return random.Random(seed).sample(rows, n)


def score(judge: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and macro-F1 of argmax_s p_J on ``rows``, overall and per source, with the scoring time."""
    t0 = time.perf_counter()
    probs = judge.judge([(r["question"], r["answer"]) for r in rows]).probs
    seconds = time.perf_counter() - t0
    pred = [STANCES[i] for i in probs.argmax(axis=1)]
    gold = [r["label"] for r in rows]
    out = {"all": classification_metrics(gold, pred)}
    for source in sorted({r["source"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        out[source] = classification_metrics([gold[i] for i in idx], [pred[i] for i in idx])
    summary = {k: {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]} for k, m in out.items()}
    return {"eval_seconds": round(seconds, 2), "metrics": summary, "confusion": out["all"]["confusion"]}


def run_base(name: str, base: str, train: list[dict[str, Any]], held: list[dict[str, Any]], cfg: JudgeTrainConfig,
             seed: int) -> dict[str, Any]:
    cfg = dataclasses.replace(cfg, base=base)
    with tempfile.TemporaryDirectory(prefix=f"judge_{name}_") as out:
        record = train_classifier(train, base, cfg, seed, out, progress=False)
        judge = load_classifier_judge(name, out, batch_size=32, max_length=cfg.max_length, device="cpu")
        n_params = sum(p.numel() for p in judge.model.parameters())
        result = score(judge, held)
    return {"base": base, "params": n_params, "train_rows": len(train), "steps": record["steps"],
            "train_seconds": record["seconds"], "train_loss": record["train_loss"], **result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="judge_base_choice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--heldout", default="work", help="dev topic held out for scoring (default: work)")
    ap.add_argument("--smollm2", default="models/base", help="SmolLM2-135M Hugging Face folder (default: models/base)")
    ap.add_argument("--bases", default="minilm,smollm2")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-rows", action="append", default=[], metavar="BASE=N", help="train BASE on N random rows")
    ap.add_argument("--eval-rows", type=int, default=None, help="score a seeded random subset of the held-out rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/judge_base_choice.json")
    a = ap.parse_args(argv)
    cfg = JudgeTrainConfig(base="minilm", sources=["bank", "annotations"], epochs=a.epochs, learning_rate=a.learning_rate,
                           batch_size=a.batch_size, max_length=a.max_length, seed=a.seed)
    max_rows = {k: int(v) for k, v in (s.split("=", 1) for s in a.max_rows)}
    rows = judge_training_rows(a.data, cfg.sources, None)  # dev split only (checked)
    train, held = split_rows(rows, a.heldout)
    held = subset(held, a.eval_rows, a.seed)
    paths = {"minilm": "minilm", "smollm2": a.smollm2}
    results = {}
    for name in a.bases.split(","):
        rows_used = subset(train, max_rows.get(name), a.seed)
        results[name] = run_base(name, paths[name], rows_used, held, cfg, a.seed)
        r = results[name]
        print(f"{name:8s} params {r['params'] / 1e6:6.1f}M  train rows {r['train_rows']:5d}  steps {r['steps']:4d}  "
              f"train {r['train_seconds']:7.1f} s  eval {r['eval_seconds']:5.1f} s  "
              f"held-out {a.heldout}: macro-F1 {r['metrics']['all']['macro_f1']:.3f}  acc {r['metrics']['all']['accuracy']:.3f}  "
              + "  ".join(f"{s} F1 {m['macro_f1']:.3f}" for s, m in r["metrics"].items() if s != "all"), flush=True)
    record = {"heldout_topic": a.heldout, "eval_rows": len(held), "train_topics": sorted({r["topic"] for r in train}),
              "epochs": a.epochs, "learning_rate": a.learning_rate, "batch_size": a.batch_size, "max_length": a.max_length,
              "seed": a.seed, "threads": __import__("torch").get_num_threads(), "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
