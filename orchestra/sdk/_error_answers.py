"""A refused request's answer as the SDK's typed error, from either face's shape: the v1
envelope (``{"code", "message", "retriable", ...}``) or the OpenAI face's error object
(``{"error": {"message", "type", "param", "code", ...the envelope's fields}}``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import httpx

from orchestra.errors import ErrorCode
from orchestra.sdk._convert import structure
from orchestra.sdk._errors import ParseError, ServerError, error_class


@attrs.frozen
class _Envelope:
    code: ErrorCode
    message: str
    retriable: bool = False
    correlation_id: str | None = None
    retry_after_ms: int | None = None
    policy_label: str | None = None
    problems: tuple[str, ...] = ()
    details: Mapping[str, Any] | None = None
    param: str | None = None
    """The OpenAI face's: the request field the first problem names."""


def _retry_after_ms(response: httpx.Response) -> int | None:
    if (exact := response.headers.get("retry-after-ms", "")).isdigit():
        return int(exact)
    if (seconds := response.headers.get("Retry-After", "")).isdigit():
        return int(seconds) * 1000
    return None


def error_from_response(response: httpx.Response) -> ServerError | ParseError:
    """The exception for a non-2xx answer: a :class:`ServerError` (:class:`BudgetExceeded`
    for ``BUDGET_EXCEEDED``, :class:`QueueFull` for any other 429) built from the error
    the answer holds, or a :class:`ParseError` when it holds none."""
    status = response.status_code
    what = f"HTTP {status} from {response.request.method} {response.request.url.path}"
    try:
        body = response.json()
    except ValueError:
        snippet = response.text[:120].strip()
        return ParseError(f"{what}: not orchestra's error envelope: {snippet!r}", status)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]  # the OpenAI face's error object
    envelope = structure(body, _Envelope, what=what, status=status)
    retry_after_ms = envelope.retry_after_ms
    if retry_after_ms is None:
        retry_after_ms = _retry_after_ms(response)
    return error_class(envelope.code, status)(
        code=envelope.code,
        message=envelope.message,
        retriable=envelope.retriable,
        status=status,
        retry_after_ms=retry_after_ms,
        correlation_id=envelope.correlation_id or response.headers.get("X-Correlation-Id"),
        policy_label=envelope.policy_label,
        problems=envelope.problems,
        details=envelope.details,
        param=envelope.param,
    )
