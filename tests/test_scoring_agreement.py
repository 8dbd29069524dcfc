"""The fast likelihood scorer (prefix trees, shared prefix KV cache, LM head at scored positions only) and
its padded fallback agree with the naive one-request-per-forward loop, on every length mix and batch size."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from valuedrift.data.probes import load_probe_bank
from valuedrift.models import load_model, load_tokenizer
from valuedrift.stance import request_scoring
from valuedrift.stance.likelihood import LikelihoodScorer, build_requests
from valuedrift.stance.prefix_tree import pack_prefix_tree
from valuedrift.stance.request_scoring import Request, score_naive, score_requests, shared_prefix_length

from .conftest import DATA

TOL = 1e-4  # nats, on a sum of log-probs, fp32


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[object, object]:
    return load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def _random_requests(vocab: int, seed: int) -> list[Request]:
    """Groups of 1–5 requests per context; contexts share a common opening of random length (incl. 0);
    contexts of 1 token; continuations of 1 token; continuations sharing openings; exact duplicates."""
    rng = random.Random(seed)
    opening = tuple(rng.randrange(vocab) for _ in range(rng.choice([0, 1, 6])))
    out = []
    for _ in range(9):
        ctx = (opening + tuple(rng.randrange(vocab) for _ in range(rng.randint(0, 30)))) or (rng.randrange(vocab),)
        stem = tuple(rng.randrange(vocab) for _ in range(rng.randint(0, 4)))
        for _ in range(rng.randint(1, 5)):
            out.append(Request(ctx, stem + tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 15)))))
        if rng.random() < 0.3:
            out.append(out[-1])  # duplicate request
    out.append(Request((rng.randrange(vocab),), (rng.randrange(vocab),)))  # 1-token context and continuation
    rng.shuffle(out)
    return out


def _assert_agree(got: np.ndarray, ref: np.ndarray, tol: float = TOL) -> None:
    np.testing.assert_array_equal(got[:, 1], ref[:, 1])
    np.testing.assert_allclose(got[:, 0], ref[:, 0], rtol=0, atol=tol)


@pytest.fixture(scope="module")
def random_cases(tiny) -> dict[int, tuple[list[Request], np.ndarray]]:
    model, _ = tiny
    cases = {}
    for seed in (0, 1, 2):
        reqs = _random_requests(model.config.vocab_size, seed)
        cases[seed] = reqs, score_naive(model, reqs)
    return cases


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["tree", "padded", "auto"])
def test_random_length_mixes_agree_with_naive(tiny, random_cases, seed: int, method: str) -> None:
    model, _ = tiny
    reqs, ref = random_cases[seed]
    for batch_size in (1, 2, 7, 1000):
        _assert_agree(score_requests(model, reqs, batch_size, pad_id=0, method=method), ref)


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
def test_probe_requests_agree_with_naive(tiny, prompt_format: str) -> None:
    model, tok = tiny
    probes = load_probe_bank(DATA)[:5]
    reqs = build_requests(tok, probes, prompt_format)
    assert shared_prefix_length(reqs) > 0  # the template's opening is cached once
    ref = score_naive(model, reqs)
    for bs in (1, 4, 16):
        _assert_agree(score_requests(model, reqs, bs, tok.pad_token_id, method="tree"), ref)


def test_eager_attention_agrees(tiny_model_dir: Path) -> None:
    """The tree mask is additive, so eager attention (which adds the mask) is exact too."""
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    reqs = _random_requests(model.config.vocab_size, 3)
    _assert_agree(score_requests(model, reqs, 4, method="tree"), score_naive(model, reqs))


class _IgnoresCustomMask(LlamaForCausalLM):
    """A model whose attention silently drops a 4D mask (as some kernels do): the tree path is wrong here."""

    def forward(self, *args, attention_mask=None, **kwargs):  # type: ignore[no-untyped-def]
        if attention_mask is not None and attention_mask.ndim == 4:
            attention_mask = None
        return super().forward(*args, attention_mask=attention_mask, **kwargs)


def test_auto_falls_back_when_the_tree_path_is_wrong(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _IgnoresCustomMask.from_pretrained(tiny_model_dir).eval()
    reqs = _random_requests(model.config.vocab_size, 4)
    ref = score_naive(model, reqs)
    wrong = score_requests(model, reqs, 4, method="tree")
    assert np.abs(wrong[:, 0] - ref[:, 0]).max() > 1e-2  # the check below has something to catch
    request_scoring._CHECKED.pop(request_scoring._support_key(model), None)
    with caplog.at_level("WARNING"):
        _assert_agree(score_requests(model, reqs, 4, method="auto"), ref)
    assert "using padded batches" in caplog.text
    assert request_scoring._CHECKED[request_scoring._support_key(model)] == "padded"


def test_scorer_rows_and_training_mode(tiny) -> None:
    model, tok = tiny
    probes = load_probe_bank(DATA)[:4]
    model.train()
    rows = LikelihoodScorer(tok, batch_size=5).score(model, probes)
    assert model.training  # restored
    model.eval()
    ref = score_naive(model, build_requests(tok, probes))
    mean_lp = (ref[:, 0] / ref[:, 1]).reshape(-1, 3)
    for k, row in enumerate(rows):
        assert row["probe_id"] == probes[k].id
        np.testing.assert_allclose([row["ll_support"], row["ll_neutral"], row["ll_oppose"]], mean_lp[k], atol=TOL)
        assert abs(row["support"] + row["neutral"] + row["oppose"] - 1) < 1e-9


def test_bad_requests_fail_before_any_forward(tiny) -> None:
    model, _ = tiny
    with pytest.raises(ValueError, match="request 1 has an empty continuation"):
        score_requests(model, [Request((1, 2), (3,)), Request((1,), ())])
    with pytest.raises(ValueError, match="request 0 has an empty context"):
        score_requests(model, [Request((), (3,))])
    with pytest.raises(ValueError, match="method must be one of"):
        score_requests(model, [Request((1,), (3,))], method="fast")
    with pytest.raises(ValueError, match="batch_size"):
        score_requests(model, [Request((1,), (3,))], batch_size=0)
    assert score_requests(model, []).shape == (0, 2)


def test_prefix_tree_shares_prefixes() -> None:
    tree = pack_prefix_tree([(1, 2, 3), (1, 2, 4, 5), (1, 2, 3), (7,)])
    assert tree.tokens == (1, 2, 3, 4, 5, 7)
    assert tree.parents == (-1, 0, 1, 1, 3, -1)
    assert tree.depths == (0, 1, 2, 2, 3, 0)
    assert tree.paths == ((0, 1, 2), (0, 1, 3, 4), (0, 1, 2), (5,))
    mask = tree.ancestor_mask()
    assert mask[4].tolist() == [True, True, False, True, True, False]
    assert mask[2].tolist() == [True, True, True, False, False, False]  # sibling 3 is not visible
    assert mask[5].tolist() == [False] * 5 + [True]


def test_shared_prefix_leaves_one_context_token() -> None:
    same = [Request((5, 6, 7), (1,)), Request((5, 6, 7), (2, 3))]
    assert shared_prefix_length(same) == 2
    assert shared_prefix_length([Request((5, 6, 7), (1,)), Request((5, 6, 9, 9), (1,))]) == 2
    assert shared_prefix_length([Request((5,), (1,)), Request((5, 6), (1,))]) == 0


@pytest.mark.integration
def test_bundled_model_fast_scorer_agrees_with_naive(bundled_base) -> None:
    model, tok = load_model(bundled_base, device="cpu"), load_tokenizer(bundled_base)
    reqs = build_requests(tok, load_probe_bank(DATA)[:3])
    request_scoring._CHECKED.pop(request_scoring._support_key(model), None)
    with torch.inference_mode():
        got = score_requests(model, reqs, 16, tok.pad_token_id)
    assert request_scoring._CHECKED[request_scoring._support_key(model)] == "tree+prefix"
    _assert_agree(got, score_naive(model, reqs), tol=1e-3)
