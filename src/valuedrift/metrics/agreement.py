"""Agreement between stance labellings (pure functions): confusion matrix, Cohen's κ, accuracy / F1, and
the agreement of two routes' per-probe stance distributions.

Stances are indexed in STANCES order (support, neutral, oppose). For a 3×3 confusion matrix m with
rows = reference (gold, or the likelihood route) and columns = prediction, n = Σ m:

- accuracy p_o = tr(m) / n
- chance agreement p_e = Σ_s (row_s / n)(col_s / n)
- Cohen's κ = (p_o − p_e) / (1 − p_e)
- per stance s: precision_s = m_ss / col_s, recall_s = m_ss / row_s, F1_s = 2 P_s R_s / (P_s + R_s);
  macro-F1 = mean_s F1_s
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.core.vocab import STANCES
from valuedrift.metrics.drift import jsd_alignment


def confusion(gold: Sequence[str], pred: Sequence[str]) -> np.ndarray:
    """3×3 counts m[g, p] = #{i : gold_i = g, pred_i = p}, rows = gold, columns = predicted, in STANCES order."""
    idx = {s: i for i, s in enumerate(STANCES)}
    m = np.zeros((len(STANCES), len(STANCES)), dtype=int)
    for g, p in zip(gold, pred, strict=True):
        m[idx[g], idx[p]] += 1
    return m


def cohen_kappa(m: np.ndarray) -> float:
    """κ = (p_o − p_e) / (1 − p_e) from a confusion matrix.

    p_o = tr(m) / n, p_e = Σ_s row_s · col_s / n² (from the row and column marginals); NaN when n = 0,
    1 when p_e = 1 (both labellings constant and equal).
    """
    n = m.sum()
    if n == 0:
        return float("nan")
    po = np.trace(m) / n
    pe = float((m.sum(axis=0) * m.sum(axis=1)).sum()) / n**2
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def classification_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-stance precision/recall/F1, macro-F1 = mean_s F1_s, κ, confusion matrix.

    precision_s = TP_s / (TP_s + FP_s), recall_s = TP_s / (TP_s + FN_s), F1_s = 2 P R / (P + R), each 0
    when its denominator is 0; accuracy = tr(m) / n (NaN when n = 0).
    """
    m = confusion(gold, pred)
    per: dict[str, dict[str, float]] = {}
    for i, s in enumerate(STANCES):
        tp, fp, fn = m[i, i], m[:, i].sum() - m[i, i], m[i, :].sum() - m[i, i]
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per[s] = {"precision": float(prec), "recall": float(rec), "f1": float(2 * prec * rec / (prec + rec)) if prec + rec else 0.0, "support": int(m[i].sum())}
    return {
        "n": int(m.sum()),
        "accuracy": float(np.trace(m) / m.sum()) if m.sum() else float("nan"),
        "macro_f1": float(np.mean([per[s]["f1"] for s in STANCES])),
        "kappa": cohen_kappa(m),
        "per_stance": per,
        "confusion": {"rows_gold_cols_pred": list(STANCES), "matrix": m.tolist()},
    }


def majority_baseline(labelled: list[dict[str, Any]]) -> dict[str, Any]:
    """Always predicting the most frequent gold stance (ties: first in STANCES order): its accuracy and macro-F1."""
    gold = [r["gold"] for r in labelled]
    top = max(STANCES, key=gold.count)
    return {"predict": top, "accuracy": gold.count(top) / len(gold), "macro_f1": classification_metrics(gold, [top] * len(gold))["macro_f1"]}


def route_agreement(q_l: pd.DataFrame, q_j: pd.DataFrame) -> dict[str, Any]:
    """Agreement between two per-probe tables (probe_id + stance columns) on their common probes.

    For probes p with distributions a(p) = q_L(p) and b(p) = q_J(p):
    argmax agreement = mean_p [argmax a(p) = argmax b(p)]; κ of those argmaxes (:func:`cohen_kappa`);
    mean_p (1 − JSD(a(p), b(p))); Pearson r of (support − oppose) across probes (NaN with ≤ 2 probes or
    a constant side); the value vectors v = mean_p a(p), mean_p b(p) and 1 − JSD between them.
    """
    m = q_l.merge(q_j, on="probe_id", suffixes=("_l", "_j"))
    a = m[[f"{s}_l" for s in STANCES]].to_numpy()
    b = m[[f"{s}_j" for s in STANCES]].to_numpy()
    arg_a, arg_b = a.argmax(axis=1), b.argmax(axis=1)
    conf = confusion([STANCES[i] for i in arg_a], [STANCES[i] for i in arg_b])
    jsd = [jsd_alignment(dict(zip(STANCES, x, strict=True)), dict(zip(STANCES, y, strict=True))) for x, y in zip(a, b, strict=True)]
    da, db = a[:, 0] - a[:, 2], b[:, 0] - b[:, 2]
    r = float(np.corrcoef(da, db)[0, 1]) if len(m) > 2 and da.std() > 0 and db.std() > 0 else float("nan")
    va, vb = a.mean(axis=0), b.mean(axis=0)
    return {
        "n_probes": len(m),
        "argmax_agreement": float((arg_a == arg_b).mean()) if len(m) else float("nan"),
        "argmax_kappa": cohen_kappa(conf),
        "argmax_confusion_rows_likelihood_cols_judge": conf.tolist(),
        "mean_jsd_alignment": float(np.mean(jsd)) if jsd else float("nan"),
        "pearson_support_minus_oppose": r,
        "vector_likelihood": dict(zip(STANCES, map(float, va), strict=True)),
        "vector_judge": dict(zip(STANCES, map(float, vb), strict=True)),
        "vector_jsd_alignment": jsd_alignment(dict(zip(STANCES, va, strict=True)), dict(zip(STANCES, vb, strict=True))),
    }
