"""The parameters the attribution gradients are taken in, and the optional random projection.

**Subset** Θ_k: the last k transformer blocks of the decoder and its final norm (``attribute.last_blocks``).
Every other parameter is frozen (``requires_grad = False``), so autograd records nothing before the first
block of the subset: the earlier blocks run as plain inference and backward passes stop at block L − k.
The embeddings and the LM head (tied in SmolLM2: 49,152 × 576 = 28M parameters) are left out. Gradients
are flattened in the subset's parameter order into one vector g ∈ R^d (SmolLM2, k = 1: d ≈ 3.5M).

**Projection** (``attribute.projection_dim`` = m > 0): the count sketch S: R^d → R^m (Charikar, Chen &
Farach-Colton 2002), a sparse Johnson–Lindenstrauss transform: coordinate i goes to bucket h(i) with sign
σ(i), both drawn once from a seeded generator,

    (S g)_j = Σ_{i: h(i) = j} σ(i) g_i,        E[⟨S a, S b⟩] = ⟨a, b⟩,   Var ≤ 2 ‖a‖² ‖b‖² / m.

It costs O(d) per vector (TRAK uses a dense Gaussian projection with GPU kernels; on CPU the sketch is the
affordable JL map). m = 0 keeps exact inner products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from valuedrift.core.errors import ConfigError


def decoder_blocks(model: Any) -> tuple[Sequence[Any], Any]:
    """(the decoder's transformer blocks, its final norm or None) of a Hugging Face causal LM."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ConfigError("attribute.last_blocks", f"cannot find the transformer blocks of {type(model).__name__} "
                                                   "(expected model.get_decoder().layers)")
    return layers, getattr(decoder, "norm", None)


def select_subset(model: Any, last_blocks: int) -> list[tuple[str, torch.nn.Parameter]]:
    """Freeze every parameter but those of the last ``last_blocks`` blocks and the final norm; return those,
    named, in a fixed order (the flattening order of every gradient)."""
    layers, norm = decoder_blocks(model)
    if last_blocks > len(layers):
        raise ConfigError("attribute.last_blocks", f"the model has {len(layers)} transformer blocks, got {last_blocks}")
    keep = {id(p) for block in list(layers)[-last_blocks:] for p in block.parameters()}
    if norm is not None:
        keep |= {id(p) for p in norm.parameters()}
    chosen = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            chosen.append((name, p))
    return chosen


def flat_grad(output: torch.Tensor, params: Sequence[torch.nn.Parameter], retain_graph: bool = False) -> torch.Tensor:
    """∇_Θ output as one flat float32 vector (zeros for parameters the output does not depend on)."""
    grads = torch.autograd.grad(output, list(params), retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params, strict=True)])


@dataclass
class CountSketch:
    """The seeded count sketch R^d → R^m of the module docstring; ``m = 0`` is the identity."""

    dim: int
    m: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.m > 0:
            gen = torch.Generator().manual_seed(self.seed)
            self.bucket = torch.randint(0, self.m, (self.dim,), generator=gen)
            self.sign = torch.randint(0, 2, (self.dim,), generator=gen).float() * 2 - 1

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """S g for g of shape (d,) or (n, d)."""
        if self.m == 0:
            return g
        rows = g.reshape(-1, self.dim)
        out = torch.zeros(rows.shape[0], self.m, dtype=rows.dtype, device=rows.device)
        out.index_add_(1, self.bucket.to(rows.device), rows * self.sign.to(rows.device))
        return out.reshape(*g.shape[:-1], self.m)
