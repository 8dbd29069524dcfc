"""The `openai` judge against a REAL OpenAI-compatible HTTP server on 127.0.0.1: llama-cpp-python's server
(separate venv, `make judge-env`) serving the bundled SmolLM2 GGUF. No mock objects.

The server's Python comes from $VALUEDRIFT_JUDGE_PYTHON (set by `make test`) or .venv-judge/bin/python;
without it the tests are skipped with the command that builds it."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from valuedrift.config.schema.evaluation import JudgeConfig
from valuedrift.stance.judges import JudgeHTTPError, build_judge

from .conftest import ROOT

pytestmark = pytest.mark.integration

KEY = "sk-local-judge-test-7f3a"
TEMPLATE = str(ROOT / "data" / "judges" / "stance_judge.yaml")
ITEMS = [
    ("Should the death penalty be abolished?", "Yes, I support abolishing it: the state should not kill, and mistakes cannot be undone."),
    ("Should the death penalty be abolished?", "No, I oppose abolition; the worst murderers deserve it."),
    ("Is religion good for society?", "It depends; it brings community to some and division to others."),
    ("Should college tuition be free?", "Absolutely, education is a public good."),
]


def judge_python() -> Path | None:
    for cand in (os.environ.get("VALUEDRIFT_JUDGE_PYTHON"), str(ROOT / ".venv-judge" / "bin" / "python")):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import llama_cpp.server"], capture_output=True).returncode == 0
            if ok:
                return Path(cand)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    py = judge_python()
    if py is None:
        pytest.skip("no llama-cpp-python server venv: run `make judge-env` (builds .venv-judge, ~5 min once)")
    from valuedrift.models import BUNDLED

    gguf = BUNDLED["smollm2-135m-instruct"].locate()
    port = free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(py), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2", "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--api_key", KEY],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                req = urllib.request.Request(base + "/models", headers={"Authorization": f"Bearer {KEY}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_openai_judge_reads_label_logprobs_from_the_server(server, monkeypatch, caplog):
    monkeypatch.setenv("VD_JUDGE_KEY", KEY)
    cfg = JudgeConfig(kind="openai", model="smollm2", base_url=server, api_key_env="VD_JUDGE_KEY", template=TEMPLATE, top_logprobs=20)
    judge = build_judge("local", cfg, "eval.judges.local")
    caplog.set_level(logging.DEBUG)
    out = judge.judge(ITEMS)
    assert out.probs.shape == (4, 3)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1, atol=1e-9)
    assert (out.label_mass > 0).sum() >= 3, out.label_mass  # the labels are among the first token's top-20
    assert np.ptp(out.probs, axis=0).max() > 1e-3  # the answer matters: not one constant distribution
    assert KEY not in caplog.text and KEY not in repr(judge)


def test_wrong_key_is_refused_without_leaking_it(server, monkeypatch):
    monkeypatch.setenv("VD_JUDGE_KEY", "sk-wrong-key-0000")
    cfg = JudgeConfig(kind="openai", model="smollm2", base_url=server, api_key_env="VD_JUDGE_KEY", template=TEMPLATE, max_retries=0)
    judge = build_judge("local", cfg, "eval.judges.local")
    with pytest.raises(JudgeHTTPError, match="HTTP 401") as e:
        judge.judge(ITEMS[:1])
    assert "sk-wrong-key-0000" not in str(e.value)

