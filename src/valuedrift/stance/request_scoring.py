"""Σ_i log π(c_i | x, c_<i) per :class:`Request` (context x, continuation c), batched and exact: for the
likelihood route (:mod:`valuedrift.stance.likelihood`), judges' label log-probs and the capability NLL.

This is the hot path (every checkpoint scores probes × 3 statements), so :func:`score_requests` does no
more arithmetic than the definition needs, and stays exact:

- **tree** (default where the model supports it): the prefix shared by every request (e.g. the chat
  template's system prompt) runs once and its KV cache is reused by every batch; the requests that share
  a context (a probe's 3 statements) become one token trie (:mod:`valuedrift.stance.prefix_tree`), so the
  prompt and any common opening words of the statements run once, with a tree attention mask and
  depth-based position ids; the LM head runs only at positions whose next token is scored, and each
  such position once, even when several requests read it; the last continuation token is never fed.
- **padded** (fallback): length-sorted, right-padded batches of context + continuation[:-1], LM head on
  the trailing positions only.

``method="auto"`` checks, once per (model class, attention implementation, dtype, device), that the
tree path reproduces the padded path on a few of the caller's own requests, and falls back to the padded
path (with a warning) if it raises or disagrees, e.g. for attention kernels that ignore a custom 4D
mask. :func:`score_naive` is the one-request-per-forward reference both are tested against. Everything
runs under ``torch.inference_mode``; thread counts are left to torch (``OMP_NUM_THREADS`` /
``torch.set_num_threads``) because the scorer runs inside training processes; the CLI makes idle
OpenMP threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``, 3–5 × faster on shared CPUs, see
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from valuedrift.stance.prefix_tree import PackedTree, pack_prefix_tree

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("auto", "tree", "padded")


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` given ``context`` (token ids)."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def _dtype_of(model: Any) -> torch.dtype:
    return next(model.parameters()).dtype


def validate_requests(requests: Sequence[Request]) -> None:
    """Every request needs ≥ 1 context token (to condition on) and ≥ 1 continuation token (to score)."""
    for i, r in enumerate(requests):
        if not r.context:
            raise ValueError(f"request {i} has an empty context (prepend a BOS/EOS token to score from scratch)")
        if not r.continuation:
            raise ValueError(f"request {i} has an empty continuation")


def _token_logprobs(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[rows, targets] = logits[rows, targets] − logsumexp(logits[rows]), in fp32.

    Every row of ``logits`` is read at least once (the LM head ran only where needed), so the
    normaliser is computed per row and gathered, never copying the (rows × vocab) block.
    """
    logits = logits.float()
    return logits[rows, targets] - torch.logsumexp(logits, dim=-1)[rows]


def _sum_per_request(token_lp: torch.Tensor, owner: np.ndarray, n_requests: int) -> np.ndarray:
    sums = torch.zeros(n_requests, dtype=torch.float64, device=token_lp.device)
    sums.index_add_(0, torch.as_tensor(owner, device=token_lp.device), token_lp.double())
    return sums.cpu().numpy()


def _accepts(model: Any, name: str) -> bool:
    """Whether ``model.forward`` takes keyword ``name`` (or passes ``**kwargs`` on, as PEFT wrappers do)."""
    params = inspect.signature(model.forward).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class _Eval:
    """Put the model in eval mode for the block; restore training mode after."""

    def __init__(self, model: Any):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()


# -- reference: one request per forward pass ---------------------------------------------------------


@torch.inference_mode()
def score_naive(model: Any, requests: Sequence[Request], progress: bool = False) -> np.ndarray:
    """Reference scorer: one forward over context + continuation per request, full logits, no tricks.

    Returns (n, 2): [Σ_i log π(a_i | x, a_<i), |a|] per request.
    """
    validate_requests(requests)
    device = _device_of(model)
    out = np.zeros((len(requests), 2), dtype=np.float64)
    with _Eval(model):
        for i, r in enumerate(tqdm(requests, desc="scoring (naive)", disable=not progress, leave=False)):
            ids = torch.tensor([r.context + r.continuation], device=device)
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            c0, n = len(r.context), len(r.continuation)
            pos = torch.arange(c0 - 1, c0 - 1 + n, device=device)
            out[i] = logprobs[pos, ids[0, c0:]].sum().item(), n
    return out


# -- padded path --------------------------------------------------------------------------------------


def _score_padded(model: Any, requests: Sequence[Request], batch_size: int, pad_id: int, progress: bool) -> np.ndarray:
    """Length-sorted right-padded batches of context + continuation[:-1]; LM head on the trailing positions."""
    device = _device_of(model)
    keep_kw = _accepts(model, "logits_to_keep")
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    out = np.zeros((len(requests), 2), dtype=np.float64)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="scoring", disable=not progress, leave=False):
        seqs = [requests[i].context + requests[i].continuation[:-1] for i in batch]
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = s
            mask[r, : len(s)] = 1
        # logits at position t predict token t+1: the first scored position is the shortest context's last token
        first = min(len(requests[i].context) for i in batch) - 1
        kwargs = {"logits_to_keep": width - first} if keep_kw else {}
        logits = model(input_ids=torch.as_tensor(ids, device=device), attention_mask=torch.as_tensor(mask, device=device), **kwargs).logits
        logits = logits[:, -(width - first) :].reshape(-1, logits.shape[-1])
        rows, targets, owner = [], [], []
        for r, i in enumerate(batch):
            c0, cont = len(requests[i].context), requests[i].continuation
            rows += [r * (width - first) + c0 - 1 - first + k for k in range(len(cont))]
            targets += cont
            owner += [r] * len(cont)
            out[i, 1] = len(cont)
        lp = _token_logprobs(logits, torch.tensor(rows, device=device), torch.tensor(targets, device=device))
        out[batch, 0] = _sum_per_request(lp, np.asarray(owner), len(batch))
    return out


# -- tree path ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Requests with one context, packed as a trie of context[prefix:] + continuation[:-1]."""

    members: tuple[int, ...]
    tree: PackedTree


def shared_prefix_length(requests: Sequence[Request]) -> int:
    """Longest token prefix common to every context, leaving ≥ 1 context token per request.

    The last context token must stay in each request's own row: its logits predict the first
    continuation token.
    """
    prefix = os.path.commonprefix([r.context for r in requests])
    return min(len(prefix), min(len(r.context) for r in requests) - 1)


def _groups(requests: Sequence[Request], prefix: int) -> list[_Group]:
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(requests):
        by_context.setdefault(r.context, []).append(i)
    groups = []
    for ctx, members in by_context.items():
        seqs = [ctx[prefix:] + requests[i].continuation[:-1] for i in members]
        groups.append(_Group(tuple(members), pack_prefix_tree(seqs)))
    return sorted(groups, key=lambda g: -len(g.tree))


def _batches(groups: list[_Group], batch_size: int) -> list[list[_Group]]:
    """Consecutive groups, ≤ ``batch_size`` requests per batch (at least one group)."""
    batches: list[list[_Group]] = []
    count = 0
    for g in groups:
        if batches and count + len(g.members) <= batch_size:
            batches[-1].append(g)
            count += len(g.members)
        else:
            batches.append([g])
            count = len(g.members)
    return batches


def _sliding_window(model: Any) -> int | None:
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


def _prefix_cache(model: Any, tokens: tuple[int, ...], device: torch.device) -> Any:
    """KV cache of ``tokens`` (batch 1), or None if the model returns none."""
    out = model(input_ids=torch.tensor([tokens], device=device), use_cache=True, logits_to_keep=1)
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _tree_batch_inputs(batch: list[_Group], requests: Sequence[Request], prefix: int, pad_id: int) -> dict[str, Any]:
    """Numpy inputs of one forward: ids, positions, allowed (B, L, prefix + L), keep (B, L), read-outs."""
    width = max(len(g.tree) for g in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    pos = np.full((len(batch), width), prefix, dtype=np.int64)
    allowed = np.zeros((len(batch), width, prefix + width), dtype=bool)
    allowed[:, :, :prefix] = True
    keep = np.zeros((len(batch), width), dtype=bool)
    reads: list[tuple[int, int, int, int]] = []  # (row, node, target token, request index in batch)
    members: list[int] = []
    for row, g in enumerate(batch):
        t = g.tree
        n = len(t)
        ids[row, :n] = t.tokens
        pos[row, :n] = prefix + np.asarray(t.depths)
        allowed[row, :n, prefix : prefix + n] = t.ancestor_mask()
        allowed[row, np.arange(n, width), prefix + np.arange(n, width)] = True  # padding attends to itself
        for path, i in zip(t.paths, g.members, strict=True):
            req = requests[i]
            start = len(req.context) - prefix - 1  # node of the last context token
            for k, tok in enumerate(req.continuation):
                node = path[start + k]
                keep[row, node] = True
                reads.append((row, node, tok, len(members)))
            members.append(i)
    # logits_to_keep (bool) flattens kept positions row-major: index of (row, node) among them
    flat = np.cumsum(keep.ravel()) - 1
    rows = np.array([flat[r * width + node] for r, node, _, _ in reads], dtype=np.int64)
    return {
        "ids": ids, "pos": pos, "allowed": allowed, "keep": keep, "members": members,
        "rows": rows, "targets": np.array([t for _, _, t, _ in reads], dtype=np.int64),
        "owner": np.array([o for _, _, _, o in reads], dtype=np.int64),
    }


def tree_workload(requests: Sequence[Request], batch_size: int, pad_id: int = 0) -> dict[str, int]:
    """What the tree path feeds the model: ``prefix`` tokens once, then ``tokens`` trie nodes
    (``padded_tokens`` with row padding) in ``forwards`` batches, the LM head at ``head_positions`` rows,
    and ``attention_pairs`` = Σ rows·width·(prefix + width) query–key pairs (for FLOP accounting)."""
    validate_requests(requests)
    prefix = shared_prefix_length(requests)
    stats = {"prefix": prefix, "tokens": 0, "padded_tokens": 0, "head_positions": 0, "attention_pairs": 0, "forwards": 0}
    for batch in _batches(_groups(requests, prefix), batch_size):
        x = _tree_batch_inputs(batch, requests, prefix, pad_id)
        stats["tokens"] += sum(len(g.tree) for g in batch)
        stats["padded_tokens"] += x["ids"].size
        stats["head_positions"] += int(x["keep"].sum())
        stats["attention_pairs"] += x["allowed"].size
        stats["forwards"] += 1
    return stats


def _score_tree(
    model: Any, requests: Sequence[Request], batch_size: int, pad_id: int, progress: bool, share_prefix: bool = True
) -> np.ndarray:
    """Prefix-tree packed scoring (see module docstring); results in input order."""
    device, dtype = _device_of(model), _dtype_of(model)
    prefix = shared_prefix_length(requests) if share_prefix else 0
    cache = _prefix_cache(model, requests[0].context[:prefix], device) if prefix > 0 else None
    if cache is None:
        prefix = 0
    groups = _groups(requests, prefix)
    out = np.zeros((len(requests), 2), dtype=np.float64)
    for batch in tqdm(_batches(groups, batch_size), desc="scoring", disable=not progress, leave=False):
        x = _tree_batch_inputs(batch, requests, prefix, pad_id)
        allowed = torch.as_tensor(x["allowed"], device=device)[:, None]
        # additive mask: eager and SDPA attention both accept it (a bool mask means "add" to eager)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
        kwargs: dict[str, Any] = {}
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(batch))
            kwargs = {"cache": batch_cache, "use_cache": True}
        logits = model(
            input_ids=torch.as_tensor(x["ids"], device=device),
            attention_mask=mask,
            position_ids=torch.as_tensor(x["pos"], device=device),
            logits_to_keep=torch.as_tensor(x["keep"], device=device),
            **kwargs,
        ).logits
        if logits.ndim != 2 or logits.shape[0] != int(x["keep"].sum()):
            raise RuntimeError(f"model ignored a boolean logits_to_keep (logits shape {tuple(logits.shape)})")
        lp = _token_logprobs(logits, torch.as_tensor(x["rows"], device=device), torch.as_tensor(x["targets"], device=device))
        members = x["members"]
        out[members, 0] = _sum_per_request(lp, x["owner"], len(members))
        out[members, 1] = [len(requests[i].continuation) for i in members]
    return out


# -- method choice ------------------------------------------------------------------------------------

# (model class, attention implementation, dtype, device type) -> "tree+prefix" | "tree" | "padded"
_CHECKED: dict[tuple[Any, ...], str] = {}


def _support_key(model: Any) -> tuple[Any, ...]:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return (type(model), impl, _dtype_of(model), _device_of(model).type)


def auto_path(model: Any) -> str | None:
    """The path ``method="auto"`` uses for this kind of model ("tree+prefix", "tree" or "padded"), or None
    before its first call."""
    return _CHECKED.get(_support_key(model))


def _check_sample(requests: Sequence[Request], max_contexts: int = 2) -> list[Request]:
    """The caller's requests with the first ``max_contexts`` distinct contexts (≤ 8 requests)."""
    contexts: list[tuple[int, ...]] = []
    for r in requests:
        if r.context not in contexts:
            contexts.append(r.context)
        if len(contexts) == max_contexts:
            break
    return [r for r in requests if r.context in contexts][:8]


def _tree_variant(model: Any, requests: Sequence[Request], pad_id: int) -> str:
    """The fastest variant that reproduces the padded path on a sample, checked once per model kind.

    Agreement: |Δ Σ log π| / |a| ≤ 1e-4 nats/token in fp32, 5e-2 in half precision (rounding only; a
    mask or position the model ignored shows up as whole nats).
    """
    key = _support_key(model)
    if key in _CHECKED:
        return _CHECKED[key]
    sample = _check_sample(requests)
    ref = _score_padded(model, sample, len(sample), pad_id, progress=False)
    tol = 1e-4 if _dtype_of(model) == torch.float32 else 5e-2
    chosen, why = "padded", ""
    for variant in ("tree+prefix", "tree"):
        try:
            got = _score_tree(model, sample, len(sample), pad_id, progress=False, share_prefix=variant == "tree+prefix")
        except Exception as e:  # noqa: BLE001 - any failure means: this trick is unsupported here
            why = f"{variant} raised {type(e).__name__}: {e}"
            continue
        err = float(np.max(np.abs(got[:, 0] - ref[:, 0]) / ref[:, 1]))
        if err <= tol:
            chosen = variant
            break
        why = f"{variant} disagreed with the padded path by {err:.2e} nats/token"
    if chosen == "padded":
        log.warning("likelihood scorer: prefix-tree path unsupported for %s (%s); using padded batches", key[0].__name__, why)
    else:
        log.info("likelihood scorer: %s path for %s (%s, %s)", chosen, key[0].__name__, key[1], key[2])
    _CHECKED[key] = chosen
    return chosen


@torch.inference_mode()
def score_requests(
    model: Any,
    requests: Sequence[Request],
    batch_size: int = 16,
    pad_id: int = 0,
    progress: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """Return an array (n, 2): [sum of continuation log-probs, number of continuation tokens] per request.

    ``batch_size`` = requests per forward pass (a context group is never split). ``method``: ``auto``
    (tree path where the model supports it, else padded), ``tree`` or ``padded``. Results come back in
    input order and agree with :func:`score_naive` up to float rounding.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    validate_requests(requests)
    if not requests:
        return np.zeros((0, 2), dtype=np.float64)
    with _Eval(model):
        variant = _tree_variant(model, requests, pad_id) if method == "auto" else {"tree": "tree+prefix"}.get(method, method)
        window = _sliding_window(model)
        longest = max(len(r.context) + len(r.continuation) for r in requests)
        if variant != "padded" and window is not None and longest > window:
            variant = "padded"  # a custom mask would bypass the sliding window; the padded path keeps it
        if variant == "padded":
            return _score_padded(model, requests, batch_size, pad_id, progress)
        return _score_tree(model, requests, batch_size, pad_id, progress, share_prefix=variant == "tree+prefix")
