"""Stance judges: label log-probs renormalised over the three stances, templates as data, hf judge on the
tiny model (checked against a direct forward pass), construction errors that name the params key."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from valuedrift.config.load import parse_params
from valuedrift.config.schema.evaluation import JudgeConfig
from valuedrift.core.errors import ConfigError
from valuedrift.models import load_model, load_tokenizer
from valuedrift.stance.judges import (
    HFJudge,
    OpenAIJudge,
    build_judge,
    load_template,
    match_label,
    renormalise,
)

from .conftest import ROOT, tiny_params_dict

TEMPLATE = ROOT / "data" / "judges" / "stance_judge.yaml"
ITEMS = [
    ("What is your opinion on abortion?", "I think abortion should be legal."),
    ("Should the death penalty be abolished?", "No, it should stay for the worst crimes."),
    ("Is religion good for society?", "It depends on the community and how faith is practised."),
]


@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    return HFJudge("tiny", load_model(tiny_model_dir, device="cpu"), tok, load_template(TEMPLATE), batch_size=4)


def test_renormalise_is_a_softmax_over_the_labels():
    with np.errstate(divide="ignore"):
        lam = np.log(np.array([[0.2, 0.1, 0.1], [0.5, 0.0, 0.0]]))
    out = renormalise(lam)
    np.testing.assert_allclose(out.probs[0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(out.probs[1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(out.label_mass, [0.4, 0.5])
    none = renormalise(np.full((1, 3), -np.inf))
    np.testing.assert_allclose(none.probs, [[1 / 3] * 3])
    assert none.label_mass[0] == 0


def test_reply_tokens_match_labels_by_prefix():
    labels = {"support": "support", "neutral": "neutral", "oppose": "oppose"}
    assert match_label(" Support", labels) == "support"
    assert match_label("neut", labels) == "neutral"
    assert match_label("**Opp", labels) == "oppose"
    assert match_label(" The", labels) is None and match_label(" ", labels) is None


def test_hf_judge_equals_a_direct_forward_pass(tiny_judge, tiny_model_dir):
    out = tiny_judge.judge(ITEMS)
    assert out.probs.shape == (3, 3)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1, atol=1e-9)
    # recompute p_J for the first item by hand: sum of label-token log-probs after the prompt
    tok, model = tiny_judge.tokenizer, tiny_judge.model
    ctx = tok(tiny_judge.prompt(*ITEMS[0]), add_special_tokens=False)["input_ids"]
    lam = []
    for s in ("support", "neutral", "oppose"):
        lab = tok(tiny_judge.template.labels[s], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + lab])).logits[0].double(), -1)
        lam.append(sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(lab)))
    expect = np.exp(lam) / np.exp(lam).sum()
    np.testing.assert_allclose(out.probs[0], expect, rtol=1e-4)
    assert math.isclose(out.label_mass[0], float(np.exp(lam).sum()), rel_tol=1e-3)


def test_prompt_keeps_template_and_few_shot_examples(tiny_judge):
    text = tiny_judge.prompt("Q-text?", "A-text.")
    assert "Question: Q-text?" in text and "Answer: A-text." in text
    assert text.count("<|im_start|>user") == 1 + len(tiny_judge.template.examples)
    assert text.endswith("<|im_start|>assistant\n")


def test_calibration_divides_out_the_content_free_prior(tiny_model_dir, tiny_judge):
    cal = HFJudge("cal", tiny_judge.model, tiny_judge.tokenizer, tiny_judge.template, calibrate=True)
    raw, adj = tiny_judge.judge(ITEMS).probs, cal.judge(ITEMS).probs
    prior = tiny_judge.judge([("N/A", "N/A")]).probs[0]
    expect = raw / prior
    np.testing.assert_allclose(adj, expect / expect.sum(axis=1, keepdims=True), rtol=1e-6)


def test_bad_templates_fail_with_the_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("user: 'no placeholders'\nlabels: {support: yes, neutral: maybe, oppose: no}\n")
    with pytest.raises(ConfigError, match=r"eval.judges.x.template: .*must contain \{question\} and \{answer\}"):
        load_template(bad, "eval.judges.x.template")
    bad.write_text("user: '{question} {answer}'\nlabels: {support: 'no', neutral: maybe, oppose: nay}\n")
    with pytest.raises(ConfigError, match="different letters"):
        load_template(bad)


def test_build_judge_checks_before_loading(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        build_judge("j", JudgeConfig(model=str(tmp_path / "missing"), template=str(TEMPLATE)), "eval.judges.j")
    assert e.value.key == "eval.judges.j.model"
    with pytest.raises(ConfigError) as e:
        build_judge("j", JudgeConfig(model="smollm2-135m-instruct", template=str(TEMPLATE)), "eval.judges.j")
    assert e.value.key == "eval.judges.j.model"
    monkeypatch.delenv("VD_TEST_KEY", raising=False)
    cfg = JudgeConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="VD_TEST_KEY", template=str(TEMPLATE))
    with pytest.raises(ConfigError) as e:
        build_judge("j", cfg, "eval.judges.j")
    assert e.value.key == "eval.judges.j.api_key_env"
    monkeypatch.setenv("VD_TEST_KEY", "sk-secret-123")
    judge = build_judge("j", cfg, "eval.judges.j")
    assert isinstance(judge, OpenAIJudge) and "sk-secret-123" not in repr(judge)


def test_eval_stage_preflight_names_the_key_when_the_endpoint_is_down(monkeypatch):
    import socket

    from valuedrift.stance.evaluation import make_judge

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = tiny_params_dict()
    p["eval"]["judges"]["local"] = {"kind": "openai", "model": "smollm2", "base_url": f"http://127.0.0.1:{port}/v1",
                                    "template": str(TEMPLATE), "max_retries": 0, "timeout_s": 2}
    params = parse_params(p)
    with pytest.raises(ConfigError) as e:
        make_judge(params.eval.judges, params.model, "local")
    assert e.value.key == "eval.judges.local.base_url" and "cannot be reached" in str(e.value)


def test_a_401_without_a_key_says_that_no_key_was_sent():
    import http.server
    import threading

    from valuedrift.stance.judges import JudgeHTTPError, post_json

    class Deny(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "missing key"}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
    try:
        with pytest.raises(JudgeHTTPError, match="HTTP 401 \\(no API key was sent"):
            post_json(url, {}, None, timeout_s=5, retries=0, who="judge x")
        with pytest.raises(JudgeHTTPError) as e:
            post_json(url, {}, "sk-some-key-123", timeout_s=5, retries=0, who="judge x")
        assert "no API key" not in str(e.value) and "sk-some-key-123" not in str(e.value)
    finally:
        server.shutdown()
