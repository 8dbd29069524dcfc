"""TracIn-CP (Pruthi et al. 2020) of every training example on every readout, over a run's checkpoints.

Plain SGD on the batch-mean loss moves θ at step t by −η_t (1/B) Σ_{z ∈ batch_t} ∇L(z; θ_t), so to first
order it changes a readout R by −η_t (1/B) Σ_{z ∈ batch_t} ⟨∇L(z; θ_t), ∇R(θ_t)⟩. A row appears in a
batch of B drawn from N rows B/N times per step in expectation, and an example stored m(z) times in the
training set (duplicated rows) m(z) times as often. Summed over the steps, with each step's gradients
replaced by those at the checkpoint c that stands for it:

    influence(z, s, split) = −(m(z) / N) Σ_c η_c ⟨g_c(z), ∇R_{s,split}(θ_c)⟩,      g_c(z) = ∇_Θ L(z; θ_c)

with η_c = Σ_{t ∈ steps(c)} lr_t (the learning rates logged by the trainer, ``train_log.json``) and
steps(c) the optimizer steps nearer to checkpoint c than to any other (ties to the earlier one). A finished
run keeps two checkpoints, the start model (step 0) and ``final/`` (step T): each stands for half of the
steps (the trapezoid rule). Positive = the example pushed R_{s,split} up (toward s), negative = away, and
Σ_z influence(z) is the first-order SGD prediction of R(θ_T) − R(θ_0).

**Approximations** (docs/definitions.md "Drift attribution"): gradients at the checkpoints, not at every
step; the expected number of visits of an example, not the sampler's actual order; plain SGD — AdamW's
per-parameter step sizes are ignored, so absolute values (and Σ_z against the measured drift) are off by
the optimizer's preconditioning while the ranking of examples is what TracIn is used for; gradients in the
parameter subset Θ only (:mod:`valuedrift.attribution.subset`), optionally count-sketched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from valuedrift.attribution.losses import DPOLoss, SFTLoss
from valuedrift.attribution.per_example import PerExampleGrads, Unsupported
from valuedrift.attribution.readout import Readout, ReadoutSpec, readout
from valuedrift.attribution.subset import CountSketch, flat_grad, select_subset
from valuedrift.data.schemas import Probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """A model folder at optimizer step ``step``, standing for ``weight`` = η_c = Σ lr over its steps."""

    step: int
    path: Path
    weight: float = 0.0


def checkpoint_weights(steps: Sequence[int], lrs: dict[int, float], default_lr: float, total: int) -> list[float]:
    """η_c for checkpoints at ``steps`` (sorted, the first 0, the last ``total``): every optimizer step
    t = 1..total goes to its nearest checkpoint (ties to the earlier), η_c = Σ of their lr_t (``lrs`` as
    logged, ``default_lr`` where a step has none)."""
    weights = [0.0] * len(steps)
    for t in range(1, total + 1):
        c = min(range(len(steps)), key=lambda k: (abs(steps[k] - t), steps[k]))
        weights[c] += lrs.get(t, default_lr)
    return weights


@dataclass
class Influence:
    """Per-example influences: ``values[i, j]`` for example i and readout ``names[j]``; ``readouts[c]`` the
    readout at each checkpoint (values and per-probe q, gradients dropped)."""

    names: list[tuple[str, str]]
    values: np.ndarray
    readouts: list[Readout]
    checkpoints: list[Checkpoint]
    n_params: int


def tracin(
    load: Callable[[Path], Any], tokenizer: Any, checkpoints: Sequence[Checkpoint], loss: SFTLoss | DPOLoss,
    copies: Sequence[int], n_rows: int, probes: Sequence[Probe], spec: ReadoutSpec, last_blocks: int,
    projection_dim: int = 0, seed: int = 0, progress: bool = True, batch_size: int = 8,
) -> Influence:
    """influence(z, s, split) of the module docstring for the distinct examples ``i`` of ``loss`` (``copies[i]``
    rows each, ``n_rows`` rows in all), over ``checkpoints`` (the first = the start model = the DPO reference);
    ``batch_size`` examples per backward pass (1 = one backward per example)."""
    values: np.ndarray | None = None
    outs: list[Readout] = []
    names: list[tuple[str, str]] = []
    n_params = 0
    scale = np.asarray(copies, dtype=np.float64) / n_rows
    for k, ckpt in enumerate(checkpoints):
        model = load(ckpt.path)
        params = [p for _, p in select_subset(model, last_blocks)]
        n_params = sum(p.numel() for p in params)
        reference = (lambda m=model: loss.reference(m, batch_size)) if k == 0 and isinstance(loss, DPOLoss) else None
        hooks = per_example_hooks(model, loss, params, batch_size, reference)
        r = readout(model, tokenizer, probes, spec, params, progress, per_row=hooks is not None)
        sketch = CountSketch(n_params, projection_dim, seed)
        directions = sketch(r.grads)
        names = r.names
        desc = f"example gradients (step {ckpt.step})"
        dots = example_dots(model, loss, params, lambda g, d=directions, sk=sketch: d @ sk(g), len(names),
                            batch_size if hooks is not None else 1, desc, progress, hooks)
        part = -ckpt.weight * scale[:, None] * dots
        values = part if values is None else values + part
        outs.append(Readout(r.names, r.values, torch.empty(0), r.q, r.sizes))
        loss.prefix = None  # its graph holds this checkpoint's weights
        del model, r, directions
    assert values is not None, "tracin needs at least one checkpoint"
    return Influence(names, values, outs, list(checkpoints), n_params)


def example_dots(
    model: Any, loss: SFTLoss | DPOLoss, params: Sequence[torch.nn.Parameter], dot: Callable[[torch.Tensor], torch.Tensor],
    width: int, batch_size: int, desc: str = "example gradients", progress: bool = False, hooks: PerExampleGrads | None = None,
) -> np.ndarray:
    """``dot(∇_Θ L(z_i))`` for every example i (rows of zeros where an example has no loss): ``batch_size``
    examples per forward and backward, in order of length, with ``hooks`` (:func:`per_example_hooks`, made
    here when None and ``batch_size`` > 1); one backward per example where there are none."""
    n = len(loss.requests)
    dots = np.zeros((n, width))
    order = [i for i in sorted(range(n), key=loss.size) if loss.size(i) > 0]
    chunks = [order[j : j + batch_size] for j in range(0, len(order), batch_size)]
    if hooks is None and batch_size > 1:  # called on its own: ``loss`` is prepared again, its prefix recorded
        hooks = per_example_hooks(model, loss, params, batch_size)
    bar = tqdm(total=len(order), desc=desc, disable=not progress, leave=False)
    if hooks is None:
        for i in order:
            value = loss(model, i)
            if value is not None and value.requires_grad:
                # a shared prefix's graph serves every example: keep it (each example's own graph goes with ``value``)
                dots[i] = dot(flat_grad(value, params, retain_graph=loss.prefix is not None)).double().cpu().numpy()
            bar.update()
    else:
        for chunk in chunks:
            for i, g in zip(*_batch_grads(model, loss, hooks, chunk), strict=True):
                dots[i] = dot(g).double().cpu().numpy()
            bar.update(len(chunk))
    bar.close()
    return dots


def _batch_grads(model: Any, loss: SFTLoss | DPOLoss, hooks: PerExampleGrads, chunk: Sequence[int]) -> tuple[list[int], torch.Tensor]:
    with hooks:
        out = loss.batch(model, chunk)
    if out is None:
        return [], torch.empty(0)
    values, live, owner = out
    return live, hooks.grads(values.sum(), owner, len(live), loss.prefix)


def per_example_hooks(model: Any, loss: SFTLoss | DPOLoss, params: Sequence[torch.nn.Parameter], batch_size: int,
                      reference: Callable[[], None] | None = None) -> PerExampleGrads | None:
    """Prepare ``loss`` on ``model`` (its shared prefix, built once, with the forward recorded when batching),
    run ``reference`` (the DPO reference log-probs), and return per-example gradients for ``loss``'s batches if
    they reproduce a plain backward on the shortest example (relative error < 1e-3); None (with a warning:
    one backward per example) otherwise, or when ``batch_size`` is 1."""
    order = [i for i in sorted(range(len(loss.requests)), key=loss.size) if loss.size(i) > 0]
    hooks: PerExampleGrads | None = None
    try:
        if batch_size > 1 and order:
            hooks = PerExampleGrads(model, params)
    except Unsupported as e:
        log.warning("attribution: one backward per example (%s: %s)", type(e).__name__, e)
    loss.prepare(model, hooks.record_prefix if hooks is not None else None)
    if reference is not None:
        reference()
    if hooks is None:
        return None
    try:
        live, grads = _batch_grads(model, loss, hooks, order[:2])
        if live:
            value = loss(model, live[0])
            assert value is not None
            one = flat_grad(value, params, retain_graph=loss.prefix is not None)
            err = float((grads[0] - one).norm() / one.norm().clamp_min(1e-30))
            if not err < 1e-3:
                raise Unsupported(f"relative gradient error {err:.1e} against one backward per example")
    except Exception as e:  # noqa: BLE001 - any failure means: this model's layers do not fit the per-row rules
        log.warning("attribution: one backward per example (%s: %s)", type(e).__name__, e)
        return None
    return hooks
