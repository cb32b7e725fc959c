"""The SDK's typed stream events: what a task's SSE stream carries, one class per kind.

Every class is ``attrs.frozen``; :func:`~orchestra.sdk._convert.event_from_wire` types an
SSE frame as one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs

from orchestra.errors import ErrorCode


@attrs.frozen(kw_only=True)
class Started:
    """The task got an engine slot (sent once)."""

    id: int
    queue_position: int
    predicted_start_ms: int
    queue_wait_ms: int
    """How long it really waited."""


@attrs.frozen(kw_only=True)
class Token:
    """A piece of generated text (wire event ``token {t, i}``)."""

    id: int
    text: str
    index: int
    """The index of this piece among the task's tokens, from 0."""


@attrs.frozen(kw_only=True)
class Metrics:
    """Progress figures between tokens, for a task submitted with ``metrics=True``:
    ``queue_depth``, ``tokens_per_s`` and, with a deadline, ``on_time_probability``."""

    id: int
    values: Mapping[str, float | None]


@attrs.frozen(kw_only=True)
class End:
    """The generation finished."""

    id: int
    tokens_out: int
    decode_time_ms: float
    finish_reason: str | None = None
    """``stop``, ``length`` or ``tool_calls`` (None from an older server)."""
    tokens_in: int | None = None
    """The prompt's tokens as the engine counted them, when it said."""
    cached_tokens: int = 0
    """Of those, the ones the engine reused from the slot's cache."""
    artifact_id: str | None = None
    """The artifact the task's text was kept as, for a task submitted with ``artifact``."""
    artifact_error: str | None = None
    """Why its text could not be kept (the task completed all the same)."""


@attrs.frozen(kw_only=True)
class Error:
    """The task ended without finishing (cancelled, engine reset, deadline)."""

    id: int
    code: ErrorCode
    retriable: bool
    retry_after_ms: int | None = None
    message: str | None = None


Event: TypeAlias = Started | Token | Metrics | End | Error
"""One event of a task's stream; ``End`` or ``Error`` is the last."""
