"""Logging: JSON Lines on stdout, request context, and no secret in any line.

Every record becomes one JSON object on one line::

    {"ts": "2026-11-23T06:01:02.345Z", "level": "info", "logger": "orchestra.queue",
     "msg": "task completed", "correlation_id": "...", "job_id": "...", "tokens_out": 16, ...}

Fields come from three places: the record itself (``ts``, ``level``, ``logger``, ``msg``,
``exc``), the request being served (``correlation_id``, set per request in a context
variable that the request's task and its children see), and ``extra=`` of the call
(``job_id``, ``tokens_in``, ``tokens_out``, ``decode_time_ms``, ``queue_wait_ms``, ...;
``trace_id`` when the task is traced, :mod:`orchestra.obs.tracing`),
plus the service's own fields (``engine``, ``engine_version``, ``model_digest``,
``pool_id``, ``replica_id``) read when the line is written. llama-server's output goes
through the same path (logger ``orchestra.engine``).

Secrets never appear: :class:`Redactor` replaces every registered secret (the bearer
token, the engine's api key), every match of a registered pattern (``tools.secrets.patterns``)
and the most recent secrets the tools saw in a call's headers, wherever they occur in the
finished line; and nothing logs request headers.
"""

from __future__ import annotations

import collections
import contextvars
import datetime
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "orchestra_correlation_id", default=None
)
"""The correlation id of the request being served (set by the HTTP face)."""

FIELDS = (
    "trace_id",
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
    "tool",
    "decision",
    "rule",
    "method",
    "url",
    "status",
    "bytes",
    "time_ms",
    "session_id",
    "task_id",
)
"""The ``extra=`` keys copied into a line (others are ignored, so nothing leaks by accident)."""

REDACTED = "[redacted]"


TRANSIENT_SECRETS = 256
"""How many of the secrets seen in calls (:meth:`Redactor.add_transient`) are remembered."""


class Redactor:
    """The secrets of this process; :meth:`scrub` removes them from a text.

    Three kinds, all bounded: the service's own secrets (:meth:`add`: a handful), the
    configured patterns (:meth:`add_pattern`: those of the configuration), and the secrets
    that passed through a tool call (:meth:`add_transient`: the newest
    :data:`TRANSIENT_SECRETS`, a last line of defence; the tools scrub what they log
    themselves). Safe to use from any thread: :meth:`scrub` reads one immutable snapshot.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._transient: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._snapshot: tuple[tuple[str, ...], tuple[re.Pattern[str], ...]] = ((), ())

    def add(self, secret: str) -> None:
        """Never write ``secret`` again (ignored when shorter than 8 characters: the
        config refuses no token length, but scrubbing ``a`` out of every line would ruin
        the log without protecting anything)."""
        if len(secret) >= 8:
            with self._lock:
                self._secrets.add(secret)
                self._rebuild()

    def add_pattern(self, pattern: str) -> None:
        """Never write a match of the regular expression ``pattern`` again (one that
        matches the empty string is refused with ValueError)."""
        compiled = re.compile(pattern)
        if compiled.fullmatch(""):
            raise ValueError(f"{pattern!r} matches the empty string")
        with self._lock:
            self._patterns.setdefault(pattern, compiled)
            self._rebuild()

    def add_transient(self, secret: str) -> None:
        """Scrub ``secret`` too for as long as it is among the newest
        :data:`TRANSIENT_SECRETS` added so (ignored when shorter than 8 characters)."""
        if len(secret) < 8:
            return
        with self._lock:
            self._transient[secret] = None
            self._transient.move_to_end(secret)
            while len(self._transient) > TRANSIENT_SECRETS:
                self._transient.popitem(last=False)
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        secrets = sorted(self._secrets | set(self._transient), key=len, reverse=True)
        self._snapshot = (tuple(secrets), tuple(self._patterns.values()))

    def scrub(self, text: str) -> str:
        secrets, patterns = self._snapshot
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in patterns:
            text = pattern.sub(REDACTED, text)
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
