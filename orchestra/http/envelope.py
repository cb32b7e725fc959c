"""The one place a refusal becomes an HTTP answer: its status, its headers and the error
envelope of DESIGN §2 (``{"code", "message", "retriable", "retry_after_ms"?,
"policy_label"?, "correlation_id"}``, plus ``problems`` and ``details`` when there are).
On the OpenAI face's routes (:data:`OPENAI_PATHS`) the body is OpenAI's error object
instead (:func:`openai_error`), with the headers the
official SDKs read before they retry: ``retry-after-ms`` beside every ``Retry-After``,
``Retry-After`` on a 503 too, and ``x-should-retry``.

==========================================  ======  ==========================================
code                                        status  headers
==========================================  ======  ==========================================
INVALID_PARAMS, CTX_LIMIT_EXCEEDED          400
UNAUTHORIZED                                401     ``WWW-Authenticate: Bearer realm=...``
FORBIDDEN                                   403
NOT_FOUND                                   404
CONFLICT, CANCELLED                         409
ARTIFACT_TOO_LARGE                          413
MODEL_LOAD_FAILED                           422
ADMISSION_REJECT (a queue is full)          429     ``Retry-After`` (s, ≥ 1), ``X-Backoff-Ms``
ADMISSION_REJECT (max sessions), BUDGET...  429
INTERNAL                                    500
WORKER_RESET, TOOL_FAILED                   502
POOL_UNREADY, POOL_UNAVAILABLE              503
DEADLINE_UNMET, DECODE_TIMEOUT, TOOL_TIMEOUT  504
STORAGE_FULL                                507
==========================================  ======  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Response, g, request

from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import json_response
from orchestra.scheduling.admission_checks import BATCH_QUEUE_CAPACITY, QUEUE_CAPACITY

STATUS: Mapping[ErrorCode, int] = {
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
    ErrorCode.MODEL_TOO_LARGE: 503,
    ErrorCode.DEADLINE_UNMET: 504,
    ErrorCode.DECODE_TIMEOUT: 504,
    ErrorCode.WORKER_RESET: 502,
    ErrorCode.CANCELLED: 409,
    ErrorCode.ARTIFACT_TOO_LARGE: 413,
    ErrorCode.STORAGE_FULL: 507,
    ErrorCode.TOOL_FAILED: 502,
    ErrorCode.TOOL_TIMEOUT: 504,
    ErrorCode.INTERNAL: 500,
}
"""The status an HTTP answer with each code carries."""
CHALLENGE = 'Bearer realm="orchestra"'
"""The ``WWW-Authenticate`` of a 401."""
_BACKOFF_LABELS = frozenset({QUEUE_CAPACITY, BATCH_QUEUE_CAPACITY})
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
"""The routes whose errors are OpenAI's error object rather than orchestra's envelope."""


def status_of(code: ErrorCode) -> int:
    """The HTTP status of an answer with ``code``."""
    return STATUS[code]


def headers_for(refusal: Refusal) -> dict[str, str]:
    """The headers an answer to ``refusal`` carries beyond the usual ones."""
    if refusal.code is ErrorCode.UNAUTHORIZED:
        return {"WWW-Authenticate": CHALLENGE}
    if refusal.policy_label in _BACKOFF_LABELS and refusal.retry_after_ms is not None:
        retry_ms = refusal.retry_after_ms
        return {"Retry-After": str(max(1, -(-retry_ms // 1000))), "X-Backoff-Ms": str(retry_ms)}
    return {}


def envelope(refusal: Refusal, correlation_id: str) -> dict[str, Any]:
    """The error envelope's body for ``refusal``."""
    body: dict[str, Any] = {
        "code": str(refusal.code),
        "message": refusal.message,
        "retriable": refusal.retriable,
        "correlation_id": correlation_id,
    }
    if refusal.retry_after_ms is not None:
        body["retry_after_ms"] = refusal.retry_after_ms
    if refusal.policy_label is not None:
        body["policy_label"] = refusal.policy_label
    if refusal.problems:
        body["problems"] = list(refusal.problems)
    if refusal.details is not None:
        body["details"] = dict(refusal.details)
    return body


_OPENAI_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_type(status: int) -> str:
    """OpenAI's ``type`` for an error answered with ``status``."""
    default = "server_error" if status >= 500 else "invalid_request_error"
    return _OPENAI_TYPES.get(status, default)


def openai_error(refusal: Refusal, status: int, correlation_id: str) -> dict[str, Any]:
    """OpenAI's error object for ``refusal``: ``message``, ``type`` and ``param`` as OpenAI
    writes them, then the envelope's fields (orchestra's code in ``code``)."""
    openai = {"message": refusal.message, "type": openai_error_type(status), "param": refusal.param}
    return {"error": openai | envelope(refusal, correlation_id)}


def openai_headers_for(refusal: Refusal, status: int) -> dict[str, str]:
    """The headers an OpenAI-face answer to ``refusal`` carries beyond the usual ones."""
    headers = headers_for(refusal)
    headers.pop("X-Backoff-Ms", None)
    retry_ms = refusal.retry_after_ms
    if status == 503 and retry_ms is None:
        retry_ms = 1000
    if "Retry-After" in headers or (status == 503 and retry_ms is not None):
        assert retry_ms is not None
        headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))
        headers["retry-after-ms"] = str(retry_ms)
    headers["x-should-retry"] = "true" if refusal.retriable else "false"
    return headers


def error_response(refusal: Refusal, status: int | None = None) -> Response:
    """The answer to ``refusal`` in the current request (``status`` overrides the code's)."""
    status = status_of(refusal.code) if status is None else status
    correlation_id = g.get("correlation_id", "")
    if request.path in OPENAI_PATHS:
        body = openai_error(refusal, status, correlation_id)
        headers = openai_headers_for(refusal, status)
    else:
        body, headers = envelope(refusal, correlation_id), headers_for(refusal)
    response = json_response(body, status)
    for name, value in headers.items():
        response.headers[name] = value
    if task_id := g.get("task_id"):  # refused after it was admitted: say which task
        response.headers["X-Task-Id"] = task_id
    return response
