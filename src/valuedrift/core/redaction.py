"""Keep secrets out of MLflow and logs.

Secrets (judge API keys, tracking-server passwords) come only from environment variables; params name
the variable (``api_key_env: OPENAI_API_KEY``), never hold the value. As a second line of defence,
everything the project sends to MLflow (params, tags) or writes to its logs passes through
:func:`redact`, which replaces

- the value of every environment variable whose name looks secret (:data:`SECRET_NAME`: ``*API_KEY*``,
  ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, …) and is at least :data:`MIN_SECRET_LEN` characters long,
- the password in a URI's user-info part (``http://user:pw@host`` → ``http://user:***@host``),

with :data:`REDACTED`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
MIN_SECRET_LEN = 8
SECRET_NAME = re.compile(r"(API_?KEY|ACCESS_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
URI_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def _environ_snapshot() -> dict[str, str]:
    """A copy of os.environ that tolerates other threads (MLflow telemetry) editing it while we read."""
    for _ in range(10):
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):  # a key vanished or the dict changed size mid-copy
            continue
    return dict(os.environ)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret-looking environment variables, longest first (so overlaps redact fully)."""
    env = _environ_snapshot() if environ is None else environ
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with secret environment values and URI passwords replaced by :data:`REDACTED`."""
    for value in secret_values(environ):
        text = text.replace(value, REDACTED)
    return URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


def redact_mapping(values: Mapping[str, Any]) -> dict[str, str]:
    """Stringify and redact every value (for MLflow params and tags)."""
    return {k: redact(str(v)) for k, v in values.items()}


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (installed on the CLI's handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = redact(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):
                record.msg, record.args, record.exc_info, record.exc_text = f"{clean}: {text}", None, None, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
