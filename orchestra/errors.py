"""Errors: the wire error codes and the package's exception tree.

Every error that reaches a client is one of the codes of DESIGN §2, carried either in an
HTTP error envelope or in a stream ``error`` event::

    OrchestraError                 root of everything orchestra raises on purpose
    ├── ApiError                   answered to an HTTP client as the error envelope
    └── EngineError                the engine failed a request; mapped at the adapter boundary
                                   from httpx errors, JSON error bodies and ``data: {"error"}``

Nothing outside :mod:`orchestra.adapter` sees an ``httpx`` exception.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs


class ErrorCode(enum.StrEnum):
    """The error codes of the wire contract, with the HTTP status each is answered with."""

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
    DEADLINE_UNMET = "DEADLINE_UNMET"
    DECODE_TIMEOUT = "DECODE_TIMEOUT"
    WORKER_RESET = "WORKER_RESET"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"

    @property
    def http_status(self) -> int:
        """The status an HTTP answer with this code carries."""
        return _STATUS[self]


_STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_PARAMS: 400,
    ErrorCode.CTX_LIMIT_EXCEEDED: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ADMISSION_REJECT: 429,
    ErrorCode.BUDGET_EXCEEDED: 429,
    ErrorCode.POOL_UNREADY: 503,
    ErrorCode.POOL_UNAVAILABLE: 503,
    ErrorCode.MODEL_LOAD_FAILED: 422,
    ErrorCode.DEADLINE_UNMET: 504,
    ErrorCode.DECODE_TIMEOUT: 504,
    ErrorCode.WORKER_RESET: 502,
    ErrorCode.CANCELLED: 409,
    ErrorCode.INTERNAL: 500,
}


class OrchestraError(Exception):
    """Root of every exception orchestra raises on purpose."""


@attrs.define(eq=False)
class ApiError(OrchestraError):
    """Raised by a request handler to answer with the error envelope of DESIGN §2.

    ``headers`` are added to the response (``Retry-After`` and ``X-Backoff-Ms`` for 429).
    """

    code: ErrorCode
    message: str
    retriable: bool = False
    retry_after_ms: int | None = None
    policy_label: str | None = None
    problems: tuple[str, ...] = ()
    """For INVALID_PARAMS: one line per bad field, each naming the field."""
    details: Mapping[str, Any] | None = None
    """Machine-readable specifics (a failed reload's ``rolled_back_to``)."""
    headers: Mapping[str, str] = attrs.field(factory=dict)

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
