"""Logging: JSON Lines on stdout, request context, and no secret in any line.

Every record becomes one JSON object on one line::

    {"ts": "2026-11-23T06:01:02.345Z", "level": "info", "logger": "orchestra.queue",
     "msg": "task completed", "correlation_id": "...", "job_id": "...", "tokens_out": 16, ...}

Fields come from three places: the record itself (``ts``, ``level``, ``logger``, ``msg``,
``exc``), the request being served (``correlation_id``, set per request in a context
variable that the request's task and its children see), and ``extra=`` of the call
(``job_id``, ``tokens_in``, ``tokens_out``, ``decode_time_ms``, ``queue_wait_ms``, ...),
plus the service's own fields (``engine``, ``engine_version``, ``model_digest``,
``pool_id``, ``replica_id``) read when the line is written. llama-server's output goes
through the same path (logger ``orchestra.engine``).

Secrets never appear: :class:`Redactor` replaces every registered secret (the bearer
token, the engine's api key) wherever it occurs in the finished line, and nothing logs
request headers.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "orchestra_correlation_id", default=None
)
"""The correlation id of the request being served (set by the HTTP face)."""

FIELDS = (
    "job_id",
    "outcome",
    "error_code",
    "engine",
    "engine_version",
    "model_digest",
    "pool_id",
    "replica_id",
    "tokens_in",
    "tokens_out",
    "decode_time_ms",
    "queue_wait_ms",
    "attempts",
    "stream",
    "pid",
    "who",
)
"""The ``extra=`` keys copied into a line (others are ignored, so nothing leaks by accident)."""

REDACTED = "[redacted]"


class Redactor:
    """The secrets of this process; :meth:`scrub` removes them from a text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Never write ``secret`` again (ignored when shorter than 8 characters: the
        config refuses no token length, but scrubbing ``a`` out of every line would ruin
        the log without protecting anything)."""
        if len(secret) >= 8:
            with self._lock:
                self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


redactor = Redactor()
"""The process's secrets, registered by the service at start."""

_service_fields: contextvars.ContextVar[Callable[[], Mapping[str, Any]] | None] = (
    contextvars.ContextVar("orchestra_service_fields", default=None)
)


def set_service_fields(fields: Callable[[], Mapping[str, Any]]) -> None:
    """Add ``fields()`` to every line logged from this task and the tasks it starts
    afterwards (a service calls it before starting its actors)."""
    _service_fields.set(fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = getattr(record, "correlation_id", None) or correlation_id.get()
        if cid is not None:
            line["correlation_id"] = cid
        fields = _service_fields.get()
        if fields is not None:
            line.update((k, v) for k, v in fields().items() if v is not None)
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redactor.scrub(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """For a terminal: ``time level logger: message [key=value ...]``, secrets scrubbed."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [
            f"{n}={getattr(record, n)}" for n in FIELDS if getattr(record, n, None) is not None
        ]
        cid = correlation_id.get()
        if cid is not None:
            extras.insert(0, f"correlation_id={cid}")
        return redactor.scrub(text + (" [" + " ".join(extras) + "]" if extras else ""))


def setup_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stdout) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per engine request
    logging.getLogger("httpcore").setLevel(logging.WARNING)
