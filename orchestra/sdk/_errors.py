"""The SDK's exceptions. Every one of them is an :class:`orchestra.errors.OrchestraError`::

    OrchestraError           (orchestra.errors) the root of everything orchestra raises
    ├── TransportError       no answer: could not connect, the connection broke, timed out
    ├── ParseError           an answer that is not what the contract says
    └── ServerError          the server answered with its error envelope (or a stream error)
        ├── QueueFull        429 ADMISSION_REJECT: the queue (or the sessions) full; come back later
        ├── BudgetExceeded   429 BUDGET_EXCEEDED: the session's turn cap or a budget is spent
        └── TaskFailed       the task's stream ended with an ``error`` event

``httpx`` exceptions never escape the SDK: they are mapped to :class:`TransportError` at
the boundary, with the original as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from orchestra.errors import ErrorCode, OrchestraError

__all__ = [
    "BudgetExceeded",
    "OrchestraError",
    "ParseError",
    "QueueFull",
    "ServerError",
    "TaskFailed",
    "TransportError",
    "error_class",
]


@attrs.define(eq=False)
class TransportError(OrchestraError):
    """Raised when no answer came back: the connection could not be made, broke, or timed
    out. ``request_sent`` is False when the server cannot have seen the request (a failed
    connect), which makes any request safe to send again."""

    message: str
    request_sent: bool = True

    def __str__(self) -> str:
        return self.message


@attrs.define(eq=False)
class ParseError(OrchestraError):
    """Raised when an answer does not match the wire contract: not JSON, a missing or
    mistyped field, an error status without orchestra's envelope (a proxy's HTML page), or
    a malformed stream event. ``status`` is the HTTP status of that answer."""

    message: str
    status: int | None = None

    def __str__(self) -> str:
        return self.message


@attrs.define(eq=False)
class ServerError(OrchestraError):
    """Raised when the server answered with its error envelope (DESIGN §2).

    ``retriable`` says whether the same request may succeed later, and
    ``retry_after_ms`` how long to wait first when the server said. ``status`` is None
    for an error that came as a stream event.
    """

    code: ErrorCode
    message: str
    retriable: bool = False
    status: int | None = None
    retry_after_ms: int | None = None
    correlation_id: str | None = None
    policy_label: str | None = None
    problems: tuple[str, ...] = ()
    """For INVALID_PARAMS: one line per bad field, each naming it."""
    details: Mapping[str, Any] | None = None
    param: str | None = None
    """For INVALID_PARAMS from the OpenAI face: the field the first problem names."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@attrs.define(eq=False)
class QueueFull(ServerError):
    """Raised for a 429 ``ADMISSION_REJECT``: the queue is full, or as many sessions are
    open as the server allows (``policy_label`` says which). ``retry_after_ms`` says when
    to come back."""


@attrs.define(eq=False)
class BudgetExceeded(ServerError):
    """Raised for a 429 ``BUDGET_EXCEEDED``: the task's session has spent its turn cap or a
    budget (``policy_label``: ``turns``, ``tokens`` or ``wall_time``). Not retriable: the
    session will not get more; delete it, or use another ``session_id``. (A turn cut at
    its budget while running ends its stream with an ``error`` event of this code, which
    ``complete()`` raises as :class:`TaskFailed`.)"""


@attrs.define(eq=False)
class TaskFailed(ServerError):
    """Raised by ``complete()`` when the task's stream ended with an ``error`` event
    (cancelled, engine reset, deadline), and by ``chat()`` and a ``stream_chat()`` stream
    when the OpenAI stream ended with its error chunk. ``text`` is what had been generated
    by then."""

    task_id: str = ""
    text: str = ""


def error_class(code: ErrorCode, status: int) -> type[ServerError]:
    """The class of the error an answer with ``code`` and HTTP ``status`` raises:
    :class:`BudgetExceeded` for ``BUDGET_EXCEEDED``, :class:`QueueFull` for any other 429,
    else :class:`ServerError`."""
    if code is ErrorCode.BUDGET_EXCEEDED:
        return BudgetExceeded
    if status == 429:
        return QueueFull
    return ServerError
