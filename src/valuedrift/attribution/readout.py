"""The readout R_{s,split}(θ) — the stance margin the instrument reports — and its gradient.

For a probe subset P_split (the tracer's seeded subsets, ``attribute.probes_per_topic`` per topic) and the
likelihood route's q_θ(p) = softmax(ℓ_θ(p)/τ), ℓ_θ,s(p) = mean token log-prob of statement a_s(p) given the
probe (:mod:`valuedrift.stance.likelihood`, same requests, same prompt format):

    R_{s,split}(θ) = (1 / |P_split|) Σ_{p ∈ P_split} q_θ(p)[s]

No new metric: its value is the value vector v(T = split)_s the drift tables report (on these probes). The
gradient ∇_Θ R is taken in the parameter subset Θ (:mod:`valuedrift.attribution.subset`), probe batch by
probe batch: one forward per batch (the opening tokens every probe shares run once,
:class:`~valuedrift.attribution.sequences.SharedPrefix`), one backward per stance (the graph of the
subset's blocks is kept between them), accumulated over batches — or, where
:class:`~valuedrift.attribution.per_example.PerExampleGrads` takes the model, one backward per batch for
the per-row gradients ∇ℓ_r and then ∇R_s = Σ_r (∂R_s/∂ℓ_r) ∇ℓ_r (the softmax's Jacobian, exact). ``all`` pools the splits: R_{s,all} = Σ_split (|P_split|/|P|) R_{s,split}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from valuedrift.attribution.per_example import PerExampleGrads, Unsupported
from valuedrift.attribution.sequences import SharedPrefix, request_logprobs
from valuedrift.attribution.subset import flat_grad
from valuedrift.core.vocab import STANCES
from valuedrift.data.schemas import Probe
from valuedrift.stance.likelihood import build_requests


@dataclass
class Readout:
    """R_{s,split} at one checkpoint: ``names[j] = (split, stance)``, ``values[j]`` = R, ``grads[j]`` = ∇_Θ R;
    ``q`` (n_probes, 3) the per-probe distributions (detached), ``sizes[split]`` = |P_split|."""

    names: list[tuple[str, str]]
    values: np.ndarray
    grads: torch.Tensor
    q: np.ndarray
    sizes: dict[str, int]


@dataclass
class ReadoutSpec:
    """How the probes are put to the model: the likelihood route's settings (``eval.*``)."""

    temperature: float = 1.0
    batch_size: int = 16  # requests per forward (whole probes: ≥ 3)
    prompt_format: str = "chat"
    system_prompt: str | None = None


def probe_ell(model: Any, tokenizer: Any, probes: Sequence[Probe], spec: ReadoutSpec, pad_id: int,
              prefix: SharedPrefix | None = None) -> torch.Tensor:
    """ℓ_θ(p) for ``probes``, flat (3 n,): the mean token log-prob of each stance statement, differentiable."""
    requests = build_requests(tokenizer, probes, spec.prompt_format, spec.system_prompt)
    sums, lengths = request_logprobs(model, requests, pad_id, prefix)
    return sums / lengths


def probe_q(model: Any, tokenizer: Any, probes: Sequence[Probe], spec: ReadoutSpec, pad_id: int,
            prefix: SharedPrefix | None = None) -> torch.Tensor:
    """q_θ(p) for ``probes`` (n, 3), differentiable: softmax(ℓ/τ) of the mean token log-probs."""
    return _q(probe_ell(model, tokenizer, probes, spec, pad_id, prefix), spec.temperature)


def readout(
    model: Any, tokenizer: Any, probes: Sequence[Probe], spec: ReadoutSpec, params: Sequence[torch.nn.Parameter],
    progress: bool = False, per_row: bool = True,
) -> Readout:
    """R_{s,split}(θ) and ∇_Θ R_{s,split}(θ) for every split among ``probes`` and every stance; ``per_row``:
    from the per-row gradients of one backward per batch (else one backward per stance)."""
    splits = sorted({p.split for p in probes})
    sizes = {sp: sum(p.split == sp for p in probes) for sp in splits}
    names = [(sp, s) for sp in splits for s in STANCES]
    dim = sum(p.numel() for p in params)
    grads = torch.zeros(len(names), dim, dtype=torch.float32, device=next(model.parameters()).device)
    values = np.zeros(len(names))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_batch = max(1, spec.batch_size // len(STANCES))
    q_rows: dict[str, np.ndarray] = {}
    model.eval()
    hooks = _row_hooks(model, params) if per_row else None
    # the chat template's opening tokens, shared by every probe, run once (their graph serves every batch)
    build = lambda: SharedPrefix.build(model, build_requests(tokenizer, probes, spec.prompt_format, spec.system_prompt), pad)  # noqa: E731
    prefix = build() if hooks is None else hooks.record_prefix(build)
    for sp in splits:
        members = [p for p in probes if p.split == sp]
        batches = [members[i : i + per_batch] for i in range(0, len(members), per_batch)]
        for batch in tqdm(batches, desc=f"readout gradients ({sp})", disable=not progress, leave=False):
            if hooks is None:
                q = probe_q(model, tokenizer, batch, spec, pad, prefix)
                row_grads = None
            else:
                with hooks:
                    ell = probe_ell(model, tokenizer, batch, spec, pad, prefix)
                row_grads = hooks.grads(ell.sum(), range(len(ell)), len(ell), prefix)
                leaf = ell.detach().requires_grad_()
                q = _q(leaf, spec.temperature)
            for k, p in enumerate(batch):
                q_rows[p.id] = q[k].detach().cpu().numpy()
            for j, s in enumerate(STANCES):
                row = names.index((sp, s))
                part = q[:, j].sum() / sizes[sp]
                values[row] += float(part.detach())
                if row_grads is None:
                    grads[row] += flat_grad(part, params, retain_graph=prefix is not None or j < len(STANCES) - 1)
                else:  # ∇R = Σ_r (∂R/∂ℓ_r) ∇ℓ_r: the softmax's Jacobian on the per-row gradients
                    grads[row] += torch.autograd.grad(part, leaf, retain_graph=True)[0].to(row_grads.dtype) @ row_grads
    return Readout(names, values, grads, np.stack([q_rows[p.id] for p in probes]), sizes)


def _q(ell: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(ell.reshape(-1, len(STANCES)) / temperature, dim=-1)


def _row_hooks(model: Any, params: Sequence[torch.nn.Parameter]) -> PerExampleGrads | None:
    try:
        return PerExampleGrads(model, params)
    except Unsupported:
        return None
