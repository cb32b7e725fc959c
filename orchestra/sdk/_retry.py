"""When to send a request again: the opt-in retry policy of the clients."""

from __future__ import annotations

import attrs

from orchestra.sdk._errors import OrchestraError, ServerError, TransportError


@attrs.frozen(kw_only=True)
class Retry:
    """Retry requests that failed in a way the server says may pass later.

    A request is retried when the server answered a retriable error (429 queue full,
    503 pool not ready) or no answer came at all. The wait is the server's
    ``Retry-After`` (``retry_after_ms``) when it gave one, else ``backoff_s`` doubling per
    attempt; a wait longer than ``max_wait_s`` is not made: the error is raised instead, so
    a caller is never parked longer than it agreed to. A submission is retried only when
    it is idempotent: with retry on, the client gives every task a ``task_id`` if it has
    none, so a submission whose answer was lost cannot run twice.
    """

    attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    """Tries in all, the first included."""
    backoff_s: float = attrs.field(default=0.25, validator=attrs.validators.ge(0))
    """The first wait when the server gave none; doubled each time."""
    max_wait_s: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    """The longest single wait."""

    def wait_s(self, attempt: int, error: OrchestraError) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after ``error`` on try ``attempt``
        (from 1); None when the error should be raised."""
        if attempt >= self.attempts:
            return None
        if isinstance(error, ServerError):
            if not error.retriable or error.status is None:
                return None
            if error.retry_after_ms is not None:
                wait = error.retry_after_ms / 1000
                return wait if wait <= self.max_wait_s else None
        elif not isinstance(error, TransportError):
            return None
        return min(self.backoff_s * 2.0 ** (attempt - 1), self.max_wait_s)
