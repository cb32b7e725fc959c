"""Errors: the wire error codes and the package's one exception tree.

Every error that reaches a client is one of the codes of DESIGN §2, carried either in an
HTTP error envelope or in a stream ``error`` event. Every exception orchestra raises on
purpose is an :class:`OrchestraError`::

    OrchestraError                 root of everything orchestra raises on purpose
    ├── Refusal                    an actor said no: the code, why, and when to come back;
    │   │                          the HTTP face turns it into status, headers and the
    │   │                          envelope (orchestra.http.envelope), in one place
    │   └── ReloadFailed           (orchestra.actors.pool_control) MODEL_LOAD_FAILED: the
    │                              new model did not load, the pool rolled back
    ├── EngineError                the engine failed a request; mapped at the adapter
    │                              boundary from httpx errors, JSON error bodies and
    │                              ``data: {"error"}`` frames
    ├── BadFraming                 (orchestra.engine.http1) an engine's answer is not
    │                              HTTP/1.1 as the stream reader knows it; never leaves
    │                              the reader: it becomes an EngineError (WORKER_RESET)
    ├── EngineStartError           the engine cannot be started at all (its port is taken)
    ├── ConfigError                a configuration cannot be used: one line per problem,
    │                              each naming its key (``orchestra serve`` exits 2)
    ├── InstallError               ``orchestra engine install`` cannot go on (exits 1)
    ├── CatalogError               the model catalog's or the artifact store's database
    │                              or files failed (answered 500)
    ├── AuditError                 (orchestra.tools) the tools' audit database failed
    │                              (answered 500: a call that cannot be audited fails)
    ├── Problem                    (orchestra.actors.fields) one bad request field; never
    │                              leaves a parser: all of a body's become one Refusal
    ├── UsageError                 (orchestra.cli.artifacts) arguments or a file the
    │                              ``orchestra artifact`` command cannot use (exits 2)
    └── the SDK's errors           (orchestra.sdk) a client's view of a call:
        ├── TransportError         no answer: could not connect, broke, timed out
        ├── ParseError             an answer that is not what the contract says
        └── ServerError            the server answered with its error envelope
            ├── QueueFull          429 ADMISSION_REJECT
            ├── BudgetExceeded     429 BUDGET_EXCEEDED
            └── TaskFailed         the task's stream ended with an ``error`` event

Nothing outside :mod:`orchestra.engine.llamacpp`, :mod:`orchestra.engine.openai_compat`
and :mod:`orchestra.engine.streams` sees an ``httpx`` exception, and nothing below the HTTP
face knows about status codes or headers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs


class ErrorCode(enum.StrEnum):
    """The error codes of the wire contract (DESIGN §2)."""

    INVALID_PARAMS = "INVALID_PARAMS"
    CTX_LIMIT_EXCEEDED = "CTX_LIMIT_EXCEEDED"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    ADMISSION_REJECT = "ADMISSION_REJECT"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    POOL_UNREADY = "POOL_UNREADY"
    POOL_UNAVAILABLE = "POOL_UNAVAILABLE"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    MODEL_TOO_LARGE = "MODEL_TOO_LARGE"
    DEADLINE_UNMET = "DEADLINE_UNMET"
    DECODE_TIMEOUT = "DECODE_TIMEOUT"
    WORKER_RESET = "WORKER_RESET"
    CANCELLED = "CANCELLED"
    ARTIFACT_TOO_LARGE = "ARTIFACT_TOO_LARGE"
    STORAGE_FULL = "STORAGE_FULL"
    TOOL_FAILED = "TOOL_FAILED"
    TOOL_TIMEOUT = "TOOL_TIMEOUT"
    INTERNAL = "INTERNAL"


class OrchestraError(Exception):
    """Root of every exception orchestra raises on purpose."""


@attrs.define(eq=False)
class Refusal(OrchestraError):
    """Raised (or returned) by an actor that will not do what it was asked.

    A domain value: what was refused (``code``), why (``message``, and ``problems`` one
    per bad field for ``INVALID_PARAMS``), whether asking again may work (``retriable``)
    and when (``retry_after_ms``), and which policy said no (``policy_label``). The HTTP
    face alone decides the status, the headers and the envelope it becomes.
    """

    code: ErrorCode
    message: str
    retriable: bool = False
    retry_after_ms: int | None = None
    policy_label: str | None = None
    problems: tuple[str, ...] = ()
    """For INVALID_PARAMS: one line per bad field, each naming the field."""
    param: str | None = None
    """For INVALID_PARAMS: the field the first problem names (OpenAI's ``param``)."""
    details: Mapping[str, Any] | None = None
    """Machine-readable specifics (a failed reload's ``rolled_back_to``)."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@attrs.define(eq=False)
class EngineError(OrchestraError):
    """Raised by the adapter when the engine fails a request.

    ``code`` is already the wire code the task's stream ends with; ``unreachable`` is true
    when no connection could be made at all (the replica is probably down), which lets the
    queue put a task that never started back at the head instead of failing it.
    """

    code: ErrorCode
    message: str
    retriable: bool
    unreachable: bool = False

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class EngineStartError(OrchestraError):
    """Raised by the owning supervisor when the engine cannot be started at all (its port
    is taken by another process); orchestra then does not start."""


class ConfigError(OrchestraError):
    """Raised by :func:`~orchestra.config.load_config` and
    :func:`~orchestra.config.parse_config` when a configuration cannot be used.

    ``problems`` holds one single-line message per problem, each starting with the dotted
    key path it is about (``config`` when it is about the whole file); ``str()`` of the
    error is those lines joined by newlines.
    """

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class InstallError(OrchestraError):
    """Raised by :func:`~orchestra.engine.install.install` when the install cannot go on;
    the message says why and what to do."""


class CatalogError(OrchestraError):
    """Raised when the catalog database cannot be opened, read or written: a corrupt or
    foreign file, a full disk, a lock held by another process past its busy timeout, a
    data directory that cannot be created, or a schema newer than this orchestra knows.

    The message names the database path; the underlying :mod:`sqlite3` or OS error is
    chained as ``__cause__``.
    """


class AuditError(OrchestraError):
    """Raised by the tools' audit (:mod:`orchestra.tools.audit`) when its database cannot be
    opened, read or written (a corrupt or foreign file, a full disk, a lock held past its
    busy timeout, a schema newer than this orchestra knows).

    The message names the database path; the underlying :mod:`sqlite3` or OS error is
    chained as ``__cause__``.
    """
