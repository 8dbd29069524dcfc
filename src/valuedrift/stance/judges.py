"""Pluggable stance judges: p_J(s | question, answer) for s ∈ S = (support, neutral, oppose).

The label-log-prob judges render the question and answer with a prompt template kept as data (YAML, see
``data/judges/stance_judge.yaml``), read the log-probability λ_s they give to the label of each stance as
their reply, and renormalise over the three stances:

    p_J(s | q, y) = exp(λ_s) / Σ_{s'} exp(λ_{s'})

- ``hf`` (:class:`HFJudge`): any local causal LM. λ_s = Σ_i log π_J(label_s,i | prompt, label_s,<i), the
  log-probability of the whole label continuation, scored with the likelihood route's batched scorer.
- ``openai`` (:class:`OpenAIJudge`): any OpenAI-compatible ``/chat/completions`` endpoint that returns
  ``logprobs``. λ_s = log Σ_{t ∈ top_logprobs, t matches label_s} exp(logprob_t) over the first reply
  token, where a token matches a label when its lower-cased, stripped text is a non-empty prefix of it
  (" Support", "supp"). Labels the endpoint did not list get λ = −∞; if none is listed the item gets the
  uniform distribution and ``label_mass`` 0.

The third kind needs no template: ``classifier``
(:class:`valuedrift.stance.classifier_judge.ClassifierJudge`) is a sequence classifier trained by the
``train_judge`` stage on dev-topic material, p_J(s | q, y) = softmax(f_θ(q ⊕ y))_s over its three logits
(``label_mass`` 1). Its module loads only when a classifier judge is checked or built.

``label_mass`` = Σ_s exp(λ_s) is reported with every judgement: how much of its probability the judge put
on the labels at all (low mass = the judge is not following the instruction).

``calibrate: true`` (hf and openai) applies contextual calibration: p ∝ p_J(·|q, y) / p_J(·|"N/A", "N/A"),
dividing out the judge's label prior measured on a content-free input; both kinds share it through
:class:`LabelLogprobJudge` (they differ only in how they read λ).

The API key of an ``openai`` judge comes only from the environment variable named in params
(``api_key_env``); it is sent in the Authorization header and never logged or written.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from tqdm.auto import tqdm

from valuedrift.config.schema.evaluation import JudgeConfig
from valuedrift.core.errors import ConfigError
from valuedrift.core.vocab import STANCES
from valuedrift.models import BUNDLED, check_model_spec, load_model, load_tokenizer

log = logging.getLogger(__name__)

CONTENT_FREE = ("N/A", "N/A")


# --------------------------------------------------------------------------------------------------
# Template (data)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: system text, user text with {question}/{answer}, label text per stance, few-shot turns."""

    name: str
    system: str
    user: str
    labels: dict[str, str]
    answer_prefix: str = ""
    examples: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)  # (question, answer, stance)

    def messages(self, question: str, answer: str) -> list[dict[str, str]]:
        """Chat messages: system, then each example as a user/assistant exchange, then the item."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for q, a, s in self.examples:
            msgs.append({"role": "user", "content": self.user.format(question=q, answer=a)})
            msgs.append({"role": "assistant", "content": self.labels[s]})
        msgs.append({"role": "user", "content": self.user.format(question=question, answer=answer)})
        return msgs


def load_template(path: str | Path, key: str = "template") -> JudgeTemplate:
    """Read and check a judge template; a problem raises ConfigError naming ``key`` and the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(key, f"judge template {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(key, f"{path} is not valid YAML: {e}") from e

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ConfigError(key, f"{path}: {what}")

    need(isinstance(raw, dict), "expected a mapping")
    unknown = set(raw) - {"name", "system", "user", "labels", "answer_prefix", "examples"}
    need(not unknown, f"unknown field(s) {sorted(unknown)}")
    user = raw.get("user")
    need(isinstance(user, str) and "{question}" in user and "{answer}" in user, "'user' must contain {question} and {answer}")
    labels = raw.get("labels")
    need(isinstance(labels, dict) and set(labels) == set(STANCES), f"'labels' must map exactly {', '.join(STANCES)} to text")
    need(all(isinstance(v, str) and v.strip() for v in labels.values()), "every label must be non-empty text")
    words = [labels[s].strip().lower() for s in STANCES]
    need(
        not any(a.startswith(b[:1]) for i, a in enumerate(words) for j, b in enumerate(words) if i != j),
        "labels must start with different letters (the openai judge matches reply tokens to labels by prefix)",
    )
    examples = []
    for i, ex in enumerate(raw.get("examples") or []):
        need(isinstance(ex, dict) and {"question", "answer", "label"} <= set(ex), f"examples[{i}] needs question, answer, label")
        need(ex["label"] in STANCES, f"examples[{i}].label must be one of {', '.join(STANCES)}")
        examples.append((str(ex["question"]), str(ex["answer"]), ex["label"]))
    return JudgeTemplate(
        name=str(raw.get("name") or path.stem),
        system=str(raw.get("system") or ""),
        user=user,
        labels={s: labels[s] for s in STANCES},
        answer_prefix=str(raw.get("answer_prefix") or ""),
        examples=tuple(examples),
    )


# --------------------------------------------------------------------------------------------------
# Judges
# --------------------------------------------------------------------------------------------------


@dataclass
class Judgement:
    """Judge output for n items: ``probs`` (n, 3) in STANCES order, ``label_mass`` (n,)."""
    probs: np.ndarray
    label_mass: np.ndarray


class Judge(Protocol):
    name: str

    def judge(self, items: Sequence[tuple[str, str]], progress: bool = False) -> Judgement:
        """p_J(·|question, answer) for each (question, answer)."""
        ...


def judge_probs(judge: Judge, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """p_J(·|question, answer) for each pair, as an (n, |S|) array in STANCES order (with a progress bar)."""
    return judge.judge(list(zip(questions, answers, strict=True)), progress=True).probs


def renormalise(label_logprobs: np.ndarray) -> Judgement:
    """λ (n, 3) → p_J = softmax(λ) per row; rows with every λ = −∞ become uniform (mass 0)."""
    lam = np.asarray(label_logprobs, dtype=np.float64)
    top = np.max(lam, axis=1, keepdims=True)
    none = ~np.isfinite(top[:, 0])
    top[none] = 0.0
    e = np.exp(lam - top)
    total = e.sum(axis=1, keepdims=True)
    probs = np.where(none[:, None], 1.0 / len(STANCES), e / np.where(total == 0, 1, total))
    mass = np.where(none, 0.0, total[:, 0] * np.exp(top[:, 0]))
    return Judgement(probs, mass)


def calibrated(j: Judgement, prior: np.ndarray) -> Judgement:
    """Contextual calibration: p ∝ p_J / prior, renormalised (``prior`` = p_J on a content-free input)."""
    p = j.probs / np.clip(prior, 1e-12, None)
    return Judgement(p / p.sum(axis=1, keepdims=True), j.label_mass)


class LabelLogprobJudge:
    """Shared ``judge`` of every judge kind: λ from ``label_logprobs`` → renormalise → optional calibration.

    Subclasses set ``name`` and ``calibrate`` and implement ``label_logprobs(items, progress)`` → λ (n, 3).
    With ``calibrate``, p ∝ p_J(·|q, y) / p_J(·|"N/A", "N/A"); the content-free prior is measured once per
    judge and kept.
    """

    name: str
    calibrate: bool = False
    _prior: np.ndarray | None = None

    def label_logprobs(self, items: Sequence[tuple[str, str]], progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def check_judgement(self, out: Judgement, n: int) -> None:
        """Hook on the uncalibrated judgement of ``n`` items (e.g. to warn about missing labels)."""

    def label_prior(self) -> np.ndarray:
        """p_J(·|"N/A", "N/A"), the judge's label prior on a content-free input (computed once)."""
        if self._prior is None:
            self._prior = renormalise(self.label_logprobs([CONTENT_FREE])).probs[0]
        return self._prior

    def judge(self, items: Sequence[tuple[str, str]], progress: bool = False) -> Judgement:
        if not items:
            return Judgement(np.zeros((0, 3)), np.zeros(0))
        out = renormalise(self.label_logprobs(items, progress))
        self.check_judgement(out, len(items))
        if not self.calibrate:
            return out
        return calibrated(out, self.label_prior())


class HFJudge(LabelLogprobJudge):
    """A local causal LM as judge: λ_s = log-prob of the label continuation after the rendered prompt."""
    def __init__(self, name: str, model: Any, tokenizer: Any, template: JudgeTemplate, batch_size: int = 8, calibrate: bool = False):
        self.name, self.model, self.tokenizer, self.template = name, model, tokenizer, template
        self.batch_size, self.calibrate = batch_size, calibrate
        self.label_ids = {s: tuple(tokenizer(template.labels[s], add_special_tokens=False)["input_ids"]) for s in STANCES}
        self._prior: np.ndarray | None = None

    def prompt(self, question: str, answer: str) -> str:
        """The judge prompt: the judge tokenizer's chat template (or plain text without one) + answer_prefix."""
        msgs = self.template.messages(question, answer)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(m["content"] if m["role"] != "assistant" else f"Stance: {m['content']}" for m in msgs) + "\nStance: "
        return text + self.template.answer_prefix

    def label_logprobs(self, items: Sequence[tuple[str, str]], progress: bool = False) -> np.ndarray:
        from valuedrift.stance.request_scoring import Request, score_requests

        requests = []
        for q, a in items:
            ctx = tuple(self.tokenizer(self.prompt(q, a), add_special_tokens=False)["input_ids"])
            requests += [Request(ctx, self.label_ids[s]) for s in STANCES]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores = score_requests(self.model, requests, self.batch_size, pad, progress)
        return scores[:, 0].reshape(-1, len(STANCES))


class JudgeHTTPError(RuntimeError):
    """The judge endpoint failed; the message names the URL and status, never the key."""

def post_json(url: str, body: dict[str, Any], api_key: str | None, timeout_s: float, retries: int, who: str) -> dict[str, Any]:
    """POST ``body`` to an OpenAI-compatible endpoint and return the JSON reply.

    Connection errors, 429 and 5xx are retried ``retries`` times with backoff min(2^attempt, 10) s; other
    HTTP errors raise at once. Errors (:class:`JudgeHTTPError`) start with ``who`` and never hold the key.
    """
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last: Exception | None = None
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - user-configured endpoint
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            hint = " (no API key was sent: is its environment variable set?)" if e.code in (401, 403) and not api_key else ""
            last = JudgeHTTPError(f"{who} answered HTTP {e.code}{hint}: {detail}")
            if e.code != 429 and e.code < 500:
                raise last from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            last = JudgeHTTPError(f"{who} cannot be reached: {getattr(e, 'reason', e)}")
        if attempt < retries:
            time.sleep(min(2.0**attempt, 10.0))
    raise last  # type: ignore[misc]


def match_label(token: str, labels: dict[str, str]) -> str | None:
    """The stance whose label starts with the token's stripped, lower-cased text (None if none or several)."""
    t = token.strip().strip("\"'*:.,").lower()
    if not t:
        return None
    hits = [s for s, lab in labels.items() if lab.strip().lower().startswith(t)]
    return hits[0] if len(hits) == 1 else None


class OpenAIJudge(LabelLogprobJudge):
    """An OpenAI-compatible chat endpoint as judge, from the first reply token's ``top_logprobs``."""
    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        template: JudgeTemplate,
        api_key: str | None = None,
        top_logprobs: int = 20,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        concurrency: int = 1,
        calibrate: bool = False,
    ):
        self.name, self.url, self.model, self.template = name, base_url.rstrip("/") + "/chat/completions", model, template
        self._key = api_key
        self.top_logprobs, self.timeout_s, self.max_retries = top_logprobs, timeout_s, max_retries
        self.concurrency, self.calibrate = concurrency, calibrate
        self._prior: np.ndarray | None = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIJudge(name={self.name!r}, url={self.url!r}, model={self.model!r})"

    def request_body(self, question: str, answer: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": self.template.messages(question, answer),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        return post_json(self.url, body, self._key, self.timeout_s, self.max_retries, f"judge {self.name}: {self.url}")

    def label_logprobs_one(self, question: str, answer: str) -> np.ndarray:
        resp = self._post(self.request_body(question, answer))
        try:
            content = resp["choices"][0]["logprobs"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise JudgeHTTPError(
                f"judge {self.name}: {self.url} returned no logprobs (does the endpoint support \"logprobs\": true?)"
            ) from e
        lam = np.full(len(STANCES), -np.inf)
        if not content:
            return lam
        first = content[0]
        alternatives = first.get("top_logprobs") or [{"token": first.get("token", ""), "logprob": first.get("logprob")}]
        mass = dict.fromkeys(STANCES, 0.0)
        for alt in alternatives:
            s = match_label(str(alt.get("token", "")), self.template.labels)
            if s is not None and alt.get("logprob") is not None:
                mass[s] += float(np.exp(alt["logprob"]))
        for j, s in enumerate(STANCES):
            if mass[s] > 0:
                lam[j] = np.log(mass[s])
        return lam

    def preflight(self) -> None:
        """One request on a content-free item: raises JudgeHTTPError if the endpoint is unusable."""
        self.label_logprobs_one(*CONTENT_FREE)

    def label_logprobs(self, items: Sequence[tuple[str, str]], progress: bool = False) -> np.ndarray:
        bar = tqdm(total=len(items), desc=f"judge {self.name}", disable=not progress, leave=False)

        def one(item: tuple[str, str]) -> np.ndarray:
            out = self.label_logprobs_one(*item)
            bar.update(1)
            return out

        try:
            if self.concurrency == 1:
                rows = [one(it) for it in items]
            else:
                with ThreadPoolExecutor(self.concurrency) as pool:
                    rows = list(pool.map(one, items))
        finally:
            bar.close()
        return np.array(rows).reshape(-1, len(STANCES))

    def check_judgement(self, out: Judgement, n: int) -> None:
        missing = int((out.label_mass == 0).sum())
        if missing:
            log.warning("judge %s: no label among the top-%d tokens for %d of %d items (scored uniform)", self.name, self.top_logprobs, missing, n)


# --------------------------------------------------------------------------------------------------
# Construction from params
# --------------------------------------------------------------------------------------------------


def check_judge(cfg: JudgeConfig, key: str) -> JudgeTemplate | None:
    """Checks that need the file system (template, model path, key variable); no model is loaded.

    Returns the judge's template; a ``classifier`` judge has none (None): its ``model`` must be a trained
    classifier folder (config.json with the stance labels), else ConfigError at ``<key>.model``."""
    if cfg.kind == "classifier":
        from valuedrift.stance.classifier_judge import check_classifier_folder

        if cfg.calibrate:
            raise ConfigError(f"{key}.calibrate", "contextual calibration applies to the label-log-prob judges (hf, openai), not to a classifier")
        check_classifier_folder(cfg.model, f"{key}.model")
        return None
    template = load_template(cfg.template, f"{key}.template")
    if cfg.kind == "hf":

        if cfg.model in BUNDLED:
            raise ConfigError(f"{key}.model", f"{cfg.model!r} is a bundled name: run `valuedrift prepare-model` and use its folder (models/base)")
        problem = check_model_spec(cfg.model)
        if problem:
            raise ConfigError(f"{key}.model", problem)
    elif cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        raise ConfigError(f"{key}.api_key_env", f"environment variable {cfg.api_key_env} is not set")
    return template


def build_judge(name: str, cfg: JudgeConfig, key: str, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False) -> Judge:
    """Make the judge ``name`` described by ``cfg`` (``key`` = its params path, for error messages)."""
    template = check_judge(cfg, key)
    if template is None:  # kind classifier (float32; ``dtype`` and ``trust_remote_code`` do not apply)
        from valuedrift.stance.classifier_judge import load_classifier_judge

        return load_classifier_judge(name, cfg.model, cfg.batch_size, cfg.max_length, device)
    if cfg.kind == "openai":
        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        return OpenAIJudge(
            name, str(cfg.base_url), cfg.model, template, api_key, cfg.top_logprobs, cfg.timeout_s, cfg.max_retries, cfg.concurrency, cfg.calibrate
        )

    tokenizer = load_tokenizer(cfg.model, trust_remote_code)
    model = load_model(cfg.model, dtype, device, trust_remote_code)
    return HFJudge(name, model, tokenizer, template, cfg.batch_size, cfg.calibrate)
