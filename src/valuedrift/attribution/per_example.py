"""Per-example gradients of a whole batch from one backward pass (the hook method of Opacus / Goodfellow 2015).

A right-padded batch whose rows never see each other (attention stays inside a row) and the summed loss
L = Σ_e L_e, where example e owns rows r(e) (one row for an SFT example, two for a DPO pair): the gradient
of L at a module's output y_r is ∂L_e/∂y_r for the example e that owns row r, so one backward yields every
example's gradient. Per module of the parameter subset, with x_r its input and δ_r = ∂L/∂y_r:

- ``nn.Linear`` y = x Wᵀ + b:   ∇_W L_e = Σ_{r ∈ r(e)} Σ_t δ_{r,t} x_{r,t}ᵀ,   ∇_b L_e = Σ_{r ∈ r(e)} Σ_t δ_{r,t};
- any other module owning parameters (RMSNorm / LayerNorm weights, …): the module is run again on its
  recorded input with a per-row copy of each parameter, broadcast over the row's other dimensions, and
  ∇ of ⟨y, δ⟩ w.r.t. the copies is each row's gradient (exact, for any elementwise use of the parameter).

Padding positions carry δ = 0 (their log-probs are not scored and no real token attends to them), so they
add nothing. Autograd is asked for δ at the hooked outputs only: no parameter gradient is accumulated.

**Shared prefix** (:class:`~valuedrift.attribution.sequences.SharedPrefix`): the rows continue from one
cached run of their common opening tokens, whose keys and values K_ℓ, V_ℓ in the subset's blocks depend on
Θ too. The prefix's forward is recorded once (:meth:`PerExampleGrads.record_prefix`); per batch, autograd
also returns each row's gradient at the row's expanded copy of K_ℓ, V_ℓ, and one vector-Jacobian product
per row through the prefix's graph carries it to the prefix's hooked outputs, where the formulas above
give that row's share (with the prefix's single input row standing for every row).
Anything else (a parameter used outside its module's broadcasting pattern) raises :class:`Unsupported`
and the caller falls back to one backward per example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from valuedrift.attribution.sequences import SharedPrefix


class Unsupported(RuntimeError):
    """The subset has a parameter whose per-row gradient this module cannot take."""


class PerExampleGrads:
    """Hooks on the modules owning ``params`` (the subset, in flattening order) while a batch runs inside
    ``with``; :meth:`grads` then returns every example's flat gradient (n_examples, d)."""

    def __init__(self, model: nn.Module, params: Sequence[nn.Parameter]) -> None:
        self.params = list(params)
        wanted = {id(p) for p in self.params}
        self.modules: list[tuple[nn.Module, list[tuple[str, nn.Parameter]]]] = []
        for module in model.modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) in wanted]
            if own:
                self.modules.append((module, own))
        if sum(len(own) for _, own in self.modules) != len(self.params):
            raise Unsupported("a subset parameter is shared between modules")
        self.calls: Calls = {}
        self.prefix_calls: Calls = {}
        self.handles: list[Any] = []

    def _record(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            self.calls.setdefault(id(module), []).append((detached, kwargs, out))

    def __enter__(self) -> PerExampleGrads:
        self.calls = {}
        self.handles = [m.register_forward_hook(self._record, with_kwargs=True) for m, _ in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def record_prefix(self, build: Callable[[], SharedPrefix | None]) -> SharedPrefix | None:
        """Run ``build`` (the shared prefix's forward with autograd) with the hooks on, and keep its calls."""
        with self:
            prefix = build()
        self.prefix_calls = self.calls if prefix is not None else {}
        return prefix

    def grads(self, total: torch.Tensor, owner: Sequence[int], n_examples: int, prefix: SharedPrefix | None = None) -> torch.Tensor:
        """∇_Θ L_e for each example e (rows: ``owner[r]`` = the example of model row r), from one backward of
        ``total`` = Σ_e L_e recorded inside ``with`` (its rows continuing from ``prefix``'s last cache, if any),
        called after the ``with`` block."""
        rows = len(owner)
        outs = [(id(m), k, out) for m, _ in self.modules for k, (_, _, out) in enumerate(self.calls.get(id(m), []))]
        kv = [t for pair in (prefix.expanded if prefix is not None and self.prefix_calls else []) for t in pair if t.requires_grad]
        if not outs:
            raise Unsupported("no subset module took part in the forward pass")
        found = torch.autograd.grad(total, [o for _, _, o in outs] + kv, allow_unused=True)
        per_param: dict[int, torch.Tensor] = {}
        self._accumulate(per_param, self.calls, dict(zip(((i, k) for i, k, _ in outs), found[: len(outs)], strict=True)), rows)
        if kv:
            self._accumulate(per_param, self.prefix_calls, self._prefix_deltas(prefix, found[len(outs):], rows), rows)
        flat = torch.cat([(per_param[id(p)] if id(p) in per_param else torch.zeros(rows, *p.shape, device=total.device))
                          .reshape(rows, -1).float() for p in self.params], dim=1)
        if list(owner) == list(range(n_examples)):
            return flat
        index = torch.tensor(list(owner), device=total.device)
        return torch.zeros(n_examples, flat.shape[1], dtype=flat.dtype, device=flat.device).index_add_(0, index, flat)

    def _prefix_deltas(self, prefix: Any, kv_deltas: Sequence[torch.Tensor | None], rows: int) -> dict[tuple[int, int], torch.Tensor | None]:
        """Each row's gradient at the prefix's hooked outputs, (rows, *shape[1:]) per call, by one
        vector-Jacobian product per row from its gradient at the prefix's (keys, values)."""
        sources = [t for pair in prefix.kv for t in pair if t.requires_grad]
        outs = [(id(m), k, out) for m, _ in self.modules for k, (_, _, out) in enumerate(self.prefix_calls.get(id(m), []))]
        live = [(s, d) for s, d in zip(sources, kv_deltas, strict=True) if d is not None]
        per_row: list[list[torch.Tensor | None]] = []
        for r in range(rows):
            per_row.append(list(torch.autograd.grad([s for s, _ in live], [o for _, _, o in outs], [d[r : r + 1] for _, d in live],
                                                    retain_graph=True, allow_unused=True)))
        deltas: dict[tuple[int, int], torch.Tensor | None] = {}
        for j, (i, k, out) in enumerate(outs):
            got = [row[j] for row in per_row]
            deltas[(i, k)] = None if all(g is None for g in got) else torch.cat(
                [g if g is not None else torch.zeros_like(out) for g in got])
        return deltas

    def _accumulate(self, per_param: dict[int, torch.Tensor], calls: Calls, deltas: dict[tuple[int, int], torch.Tensor | None], rows: int) -> None:
        for module, own in self.modules:
            for k, (args, kwargs, _) in enumerate(calls.get(id(module), [])):
                delta = deltas.get((id(module), k))
                if delta is None:
                    continue
                if delta.shape[0] != rows:
                    raise Unsupported(f"{type(module).__name__} ran on {delta.shape[0]} rows, the batch has {rows}")
                args = tuple(_rows(a, rows) for a in args)
                parts = _linear(module, args[0], delta) if isinstance(module, nn.Linear) else _local(module, own, args, kwargs, delta)
                for (_, p), g in zip(own, parts, strict=True):
                    per_param[id(p)] = g if id(p) not in per_param else per_param[id(p)] + g


Calls = dict[int, list[tuple[tuple[Any, ...], dict[str, Any], torch.Tensor]]]


def _rows(a: Any, rows: int) -> Any:
    """A recorded input of the prefix's single row, standing for each of ``rows`` rows."""
    return a.expand(rows, *a.shape[1:]) if isinstance(a, torch.Tensor) and a.ndim > 0 and a.shape[0] == 1 and rows > 1 else a


def _linear(module: nn.Linear, x: torch.Tensor, delta: torch.Tensor) -> list[torch.Tensor]:
    """Per-row ∇W (and ∇b) of a Linear layer from its input and output gradient."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    d3 = delta.reshape(delta.shape[0], -1, delta.shape[-1])
    out = [torch.einsum("rto,rti->roi", d3, x3.to(d3.dtype))]
    if module.bias is not None:
        out.append(d3.sum(1))
    return out


def _local(module: nn.Module, own: list[tuple[str, nn.Parameter]], args: tuple[Any, ...], kwargs: dict[str, Any],
           delta: torch.Tensor) -> list[torch.Tensor]:
    """Per-row gradients of ``module``'s own parameters: rerun it with a per-row copy of each, broadcast
    over the output's non-row dimensions, and differentiate ⟨y, δ⟩."""
    rows = delta.shape[0]
    copies = {}
    for name, p in own:
        pad = delta.ndim - 1 - p.ndim
        if pad < 0:
            raise Unsupported(f"{type(module).__name__}.{name} has more dimensions than its output")
        copies[name] = p.detach().reshape(1, *([1] * pad), *p.shape).expand(rows, *([1] * pad), *p.shape).clone().requires_grad_()
    with torch.enable_grad():
        y = torch.func.functional_call(module, copies, args, kwargs)
        if not isinstance(y, torch.Tensor) or y.shape != delta.shape:
            raise Unsupported(f"{type(module).__name__} does not broadcast a per-row copy of its parameters")
        grads = torch.autograd.grad(y, list(copies.values()), grad_outputs=delta)
    return [g.reshape(rows, *p.shape) for g, (_, p) in zip(grads, own, strict=True)]
