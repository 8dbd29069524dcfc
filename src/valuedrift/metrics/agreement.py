"""Agreement between stance labellings (pure functions): confusion matrix, Cohen's κ, accuracy / F1 with
percentile-bootstrap CIs, the agreement of two labelling passes, and the agreement of two routes' per-probe
stance distributions.

Stances are indexed in STANCES order (support, neutral, oppose). For a 3×3 confusion matrix m with
rows = reference (gold, or the likelihood route) and columns = prediction, n = Σ m:

- accuracy p_o = tr(m) / n
- chance agreement p_e = Σ_s (row_s / n)(col_s / n)
- Cohen's κ = (p_o − p_e) / (1 − p_e)
- per stance s: precision_s = m_ss / col_s, recall_s = m_ss / row_s, F1_s = 2 P_s R_s / (P_s + R_s);
  macro-F1 = mean_s F1_s

Every one of them is a function of m alone (:func:`confusion_scores`), so a bootstrap resample only needs
the resampled confusion matrix (:func:`bootstrap_classification`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from valuedrift.core.vocab import STANCES
from valuedrift.metrics.drift import jsd_alignment

BOOT_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "kappa")
"""The classification metrics :func:`bootstrap_classification` reports as {"value", "lo", "hi"}."""


def confusion(gold: Sequence[str], pred: Sequence[str]) -> np.ndarray:
    """3×3 counts m[g, p] = #{i : gold_i = g, pred_i = p}, rows = gold, columns = predicted, in STANCES order."""
    idx = {s: i for i, s in enumerate(STANCES)}
    m = np.zeros((len(STANCES), len(STANCES)), dtype=int)
    for g, p in zip(gold, pred, strict=True):
        m[idx[g], idx[p]] += 1
    return m


def confusion_scores(m: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, macro_f1, kappa (shape ``...``) and per-stance precision, recall, f1 (shape ``..., 3``) of
    confusion matrices ``m`` of shape (..., 3, 3), with the formulas of the module docstring.

    precision_s, recall_s and F1_s are 0 when their denominator is 0; accuracy and κ are NaN when n = 0;
    κ = 1 when p_e = 1 (both labellings constant and equal).
    """
    m = np.asarray(m, dtype=np.float64)
    n = m.sum(axis=(-2, -1))
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    row, col = m.sum(axis=-1), m.sum(axis=-2)  # gold / predicted counts per stance
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(col > 0, tp / col, 0.0)
        rec = np.where(row > 0, tp / row, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
        po = np.where(n > 0, tp.sum(axis=-1) / n, np.nan)
        pe = (row * col).sum(axis=-1) / n**2
        kappa = np.where(n > 0, np.where(pe < 1, (po - pe) / (1 - pe), 1.0), np.nan)
    return {"accuracy": po, "macro_f1": f1.mean(axis=-1), "kappa": kappa, "precision": prec, "recall": rec, "f1": f1}


def cohen_kappa(m: np.ndarray) -> float:
    """κ = (p_o − p_e) / (1 − p_e) from a confusion matrix.

    p_o = tr(m) / n, p_e = Σ_s row_s · col_s / n² (from the row and column marginals); NaN when n = 0,
    1 when p_e = 1 (both labellings constant and equal).
    """
    return float(confusion_scores(m)["kappa"])


def classification_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-stance precision/recall/F1, macro-F1 = mean_s F1_s, κ, confusion matrix.

    precision_s = TP_s / (TP_s + FP_s), recall_s = TP_s / (TP_s + FN_s), F1_s = 2 P R / (P + R), each 0
    when its denominator is 0; accuracy = tr(m) / n (NaN when n = 0).
    """
    m = confusion(gold, pred)
    sc = confusion_scores(m)
    per = {s: {"precision": float(sc["precision"][i]), "recall": float(sc["recall"][i]), "f1": float(sc["f1"][i]),
               "support": int(m[i].sum())} for i, s in enumerate(STANCES)}
    return {
        "n": int(m.sum()),
        **{k: float(sc[k]) for k in BOOT_METRICS},
        "per_stance": per,
        "confusion": {"rows_gold_cols_pred": list(STANCES), "matrix": m.tolist()},
    }


def majority_baseline(labelled: list[dict[str, Any]]) -> dict[str, Any]:
    """Always predicting the most frequent gold stance (ties: first in STANCES order): its accuracy and macro-F1."""
    gold = [r["gold"] for r in labelled]
    top = max(STANCES, key=gold.count)
    return {"predict": top, "accuracy": gold.count(top) / len(gold), "macro_f1": classification_metrics(gold, [top] * len(gold))["macro_f1"]}


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def resample_weights(n_units: int, n_boot: int, seed: int, chunk: int = 250) -> Iterator[np.ndarray]:
    """Multiplicities of a percentile bootstrap over ``n_units`` units, in chunks of (b, n_units): row r
    holds w_r,u = #{j : u*_j = u} for n_units draws u*_1..u*_n_units uniform with replacement (a seeded
    numpy Generator, so the same (n_units, n_boot, seed) gives the same resamples)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_units, size=(b, n_units))
        flat = (np.arange(b)[:, None] * n_units + draws).ravel()
        yield np.bincount(flat, minlength=b * n_units).reshape(b, n_units)


def percentile_interval(value: float, boots: Sequence[float] | np.ndarray | None, ci: float) -> dict[str, float]:
    """{"value", "lo", "hi"}: ``value`` with the percentile interval of its bootstrap replicates ``boots`` at
    level ``ci`` (NaN replicates, e.g. an undefined correlation, are left out); no replicates: lo = hi =
    value, all NaN: NaN bounds."""
    if boots is None:
        return {"value": value, "lo": value, "hi": value}
    b = np.asarray(boots, dtype=np.float64)
    b = b[~np.isnan(b)]
    if len(b) == 0:
        return {"value": value, "lo": float("nan"), "hi": float("nan")}
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(b, [alpha, 1 - alpha])
    return {"value": value, "lo": float(lo), "hi": float(hi)}


def bootstrap_classification(
    gold: Sequence[str],
    pred: Sequence[str],
    n_boot: int,
    ci: float,
    seed: int,
    groups: Sequence[Hashable] | None = None,
    means: Mapping[str, Sequence[float] | np.ndarray] | None = None,
) -> dict[str, Any]:
    """:func:`classification_metrics` of (gold, pred) with accuracy, macro_f1 and kappa each as
    {"value", "lo", "hi"}: the point estimate and its percentile bootstrap CI at level ``ci``.

    Units u = 1..U are the items (``groups`` None: U = n) or the distinct values of ``groups`` (e.g. the
    question id, when several answers share a question: a cluster bootstrap). With C_u the 3×3 confusion
    counts of unit u and B = ``n_boot`` resamples b, each drawing U units u*_1..u*_U uniformly with
    replacement (:func:`resample_weights`, seeded with ``seed``):

        m*_b = Σ_j C_{u*_j},   θ*_b = θ(m*_b)   for θ in accuracy, macro-F1, κ (:func:`confusion_scores`),
        CI = [q_{α/2}(θ*), q_{1−α/2}(θ*)],  α = 1 − ci   (q = empirical quantile over the B resamples).

    A cluster resample keeps a question's answers together, so the CI reflects the number of questions,
    not of answers; its resamples vary in size. ``means``: name → per-item values x_i, reported the same
    way as the mean x̄ = Σ_i x_i / n, on the same resamples (x̄*_b = Σ_j S_{u*_j} / Σ_j n_{u*_j}, S_u and n_u the
    sum and count of unit u). With fewer than 2 units lo = hi = value. Also returns ``unit`` ("item" or
    "group"), ``n_units``, ``n_boot`` and ``ci``.
    """
    n = len(gold)
    if len(pred) != n or (groups is not None and len(groups) != n):
        raise ValueError(f"gold, pred and groups must have one entry per item (got {n}, {len(pred)}, {len(groups or [])})")
    if groups is None:
        unit = np.arange(n, dtype=int)
    else:
        ids: dict[Hashable, int] = {}
        unit = np.array([ids.setdefault(g, len(ids)) for g in groups], dtype=int)
    n_units = int(unit.max()) + 1 if n else 0
    idx = {s: i for i, s in enumerate(STANCES)}
    code = np.array([idx[g] * len(STANCES) + idx[p] for g, p in zip(gold, pred, strict=True)], dtype=int)
    per_unit = np.zeros((n_units, len(STANCES) ** 2))
    np.add.at(per_unit, (unit, code), 1)
    values = {k: np.asarray(v, dtype=np.float64) for k, v in (means or {}).items()}
    for k, v in values.items():
        if v.shape != (n,):
            raise ValueError(f"means[{k!r}] must hold one value per item ({n}), got shape {v.shape}")
    sums = np.zeros((n_units, len(values)))
    if values:
        np.add.at(sums, unit, np.stack(list(values.values()), axis=1))
    counts = per_unit.sum(axis=1)

    boots: dict[str, np.ndarray] | None = None
    if n_units >= 2:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*BOOT_METRICS, *values)}
        for w in resample_weights(n_units, n_boot, seed):
            sc = confusion_scores((w @ per_unit).reshape(-1, len(STANCES), len(STANCES)))
            for k in BOOT_METRICS:
                parts[k].append(sc[k])
            mean = (w @ sums) / (w @ counts)[:, None]
            for j, k in enumerate(values):
                parts[k].append(mean[:, j])
        boots = {k: np.concatenate(v) for k, v in parts.items()}

    out = classification_metrics(gold, pred)
    for k in BOOT_METRICS:
        out[k] = percentile_interval(out[k], None if boots is None else boots[k], ci)
    for k, v in values.items():
        out[k] = percentile_interval(float(v.mean()) if n else float("nan"), None if boots is None else boots[k], ci)
    out.update(unit="item" if groups is None else "group", n_units=n_units, n_boot=n_boot, ci=ci)
    return out


def pass_agreement(
    labels_a: Mapping[str, Mapping[str, Any]], labels_b: Mapping[str, Mapping[str, Any]], n_boot: int, ci: float, seed: int
) -> dict[str, Any]:
    """Agreement of two labelling passes (id → {"stance", "flag"}, e.g. :func:`valuedrift.data.labelled_generations.read_labels`)
    on the ids both label (in ``labels_b`` order).

    raw agreement = mean_i [a_i = b_i] (= accuracy of pass b against pass a) and Cohen's κ of the two
    passes, each {"value", "lo", "hi"} with an item bootstrap CI (:func:`bootstrap_classification`);
    ``flag_agreement`` = mean_i [flag a_i = flag b_i] (no CI); ``n`` shared ids, ``only_a`` / ``only_b``
    ids labelled by one pass only; the confusion matrix, rows pass a, columns pass b.
    """
    shared = [k for k in labels_b if k in labels_a]
    a = [labels_a[k]["stance"] for k in shared]
    b = [labels_b[k]["stance"] for k in shared]
    boot = bootstrap_classification(a, b, n_boot, ci, seed)
    flags = [labels_a[k].get("flag") == labels_b[k].get("flag") for k in shared]
    return {
        "n": len(shared),
        "only_a": len(set(labels_a) - set(labels_b)),
        "only_b": len(set(labels_b) - set(labels_a)),
        "kappa": boot["kappa"],
        "raw_agreement": boot["accuracy"],
        "flag_agreement": float(np.mean(flags)) if flags else float("nan"),
        "confusion": {"rows_pass_a_cols_pass_b": list(STANCES), "matrix": boot["confusion"]["matrix"]},
        "n_boot": n_boot,
        "ci": ci,
    }


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
