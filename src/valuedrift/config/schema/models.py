"""Sections ``model`` and ``tracking``: where the model comes from, where MLflow logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from valuedrift.core.chat_templates import chat_template_problem
from valuedrift.core.errors import check
from valuedrift.core.redaction import redact


@dataclass
class ModelConfig:
    """Which model to start from.

    ``name`` is a bundled name (``smollm2-135m-instruct``, ``gemma3-270m``), a local folder with a
    Hugging Face model, or a hub id such as ``Qwen/Qwen3-4B-Base`` (needs a network connection).
    ``chat_template`` gives a model without one (a base model) its chat format: a named template
    (``chatml``, ``llama3``, ``gemma``; core/chat_templates.py) or a Jinja file; it replaces the tokenizer's
    own template and is used by SFT, preference training and both stance routes. ``eval.prompt_format:
    chat`` with a tokenizer that has no template and no ``chat_template`` is an error, never a fallback.

    ``revision`` pins a hub id to a branch, tag or commit; a hub id without one warns (the run uses
    whatever the hub serves that day). ``dtype`` is the weights' dtype and the training precision:
    ``bfloat16`` trains in bf16 (``bf16=True``), ``float16`` in fp16 mixed precision (float32 master
    weights for full fine-tuning; ``valuedrift.adapters.master_dtype``). ``attn_implementation`` is passed
    to ``from_pretrained`` wherever the model (or a checkpoint of it) is loaded: ``eager``, ``sdpa``,
    ``flash_attention_2`` (CUDA, bfloat16/float16, ``pip install flash-attn``), or null for transformers'
    default.
    """

    name: str = "smollm2-135m-instruct"
    revision: str | None = None
    chat_template: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None

    def validate(self, key: str) -> None:
        check(bool(self.name.strip()), f"{key}.name", "must not be empty")
        if self.attn_implementation == "flash_attention_2":
            check(self.dtype != "float32", f"{key}.attn_implementation",
                  "flash_attention_2 runs in bfloat16 or float16 only: set model.dtype accordingly")
            check(self.device == "auto" or self.device.startswith("cuda"), f"{key}.attn_implementation",
                  f"flash_attention_2 needs a CUDA device, but model.device is {self.device!r}")
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith(("cuda", "mps")),
            f"{key}.device",
            f"{self.device!r} is not one of auto, cpu, cuda[:N], mps",
        )
        if self.chat_template is not None:
            problem = chat_template_problem(self.chat_template)
            check(problem is None, f"{key}.chat_template", str(problem))
        head = Path(self.name).parts[0] if "/" in self.name else None
        check(
            head is None or not Path(head).is_dir() or Path(self.name).exists(),
            f"{key}.name",
            f"local model path {self.name!r} does not exist (not read as a hub id org/name, since {head!r} is a local folder)",
        )


@dataclass
class TrackingConfig:
    """MLflow settings. ``uri`` is overridden by the ``MLFLOW_TRACKING_URI`` environment variable."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "valuedrift"
    check_timeout_s: float = 10.0
    # an HTTP server that dies mid-run must not stall training for minutes (MLflow's own default is 7
    # retries with exponential backoff, ~4 min per call): after these, the run continues disk-only
    http_retries: int = 2
    http_timeout_s: int = 30

    def resolved_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.uri

    def validate(self, key: str) -> None:
        check(bool(self.experiment.strip()), f"{key}.experiment", "must not be empty")
        check(self.check_timeout_s > 0, f"{key}.check_timeout_s", f"must be > 0 seconds, got {self.check_timeout_s}")
        check(self.http_retries >= 0, f"{key}.http_retries", f"must be >= 0, got {self.http_retries}")
        check(self.http_timeout_s >= 1, f"{key}.http_timeout_s", f"must be >= 1 second, got {self.http_timeout_s}")
        uri = self.resolved_uri()
        source = " (from $MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") else ""
        check(
            uri.startswith(("sqlite:///", "http://", "https://", "file:", "postgresql", "mysql", "databricks"))
            or "://" not in uri,
            f"{key}.uri",
            f"{redact(uri)!r}{source} is not a tracking URI MLflow understands (sqlite:///…, http://…, postgresql://…)",
        )
