"""How an OpenAI-compatible server's refusals become orchestra's errors: its error body
(``{"error": {...}}`` as llama-server and OpenAI write it, ``{"object": "error", ...}`` as
vLLM does), its status, and what its message says, mapped to an
:class:`~orchestra.errors.EngineError` with the wire code the task ends with (the table is
in :mod:`orchestra.engine.openai_compat`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from orchestra.errors import EngineError, ErrorCode

_CONTEXT_PHRASES = ("context length", "maximum context")
"""How vLLM (``This model's maximum context length is ...``) and SGLang (``... longer than
the model's context length``) say a prompt does not fit."""


@attrs.frozen
class _Refusal:
    """What an error answer (or error chunk) says."""

    status: int
    message: str
    kind: str = ""
    code: Any = None


def refusal_from(status: int, body: Any, fallback: str) -> _Refusal:
    """The parts of an error object in any of the shapes of the module docstring."""
    if not isinstance(body, dict):
        return _Refusal(status, fallback)
    error = body.get("error", body)
    if isinstance(error, str):  # Ollama, TGI
        return _Refusal(status, error, str(body.get("error_type") or ""))
    if not isinstance(error, dict):
        return _Refusal(status, fallback)
    message = error.get("message", error.get("detail"))
    if message is None:
        message = fallback
    elif not isinstance(message, str):  # FastAPI's validation errors: a list
        message = json.dumps(message)
    return _Refusal(status, message, str(error.get("type") or ""), error.get("code"))


def answer_refusal(status: int, content: bytes) -> _Refusal:
    """The refusal in an error answer's body (JSON or not)."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    return refusal_from(status, body, f"HTTP {status}: {content[:200].decode(errors='replace')}")


def _names_model(refusal: _Refusal) -> bool:
    return refusal.code == "model_not_found" or "model" in refusal.message.lower()


def engine_error(refusal: _Refusal, *, path: str, model: str) -> EngineError:
    """An error answer of ``path`` as the EngineError of the module docstring's table."""
    status, message = refusal.status, refusal.message
    if (
        refusal.kind == "exceed_context_size_error"
        or refusal.code == "context_length_exceeded"
        or any(phrase in message.lower() for phrase in _CONTEXT_PHRASES)
    ):
        return EngineError(ErrorCode.CTX_LIMIT_EXCEEDED, message, retriable=False)
    if status in (401, 403):
        text = f"the engine refused the api key (HTTP {status}): {message}"
        return EngineError(ErrorCode.INVALID_PARAMS, text, retriable=False)
    if status == 404:
        text = (
            f"the engine does not serve model {model!r} (HTTP 404): {message}"
            if _names_model(refusal)
            else f"the engine has no {path} (HTTP 404): {message}"
        )
        return EngineError(ErrorCode.INVALID_PARAMS, text, retriable=False)
    if status in (429, 503) or refusal.kind == "unavailable_error":
        return EngineError(ErrorCode.POOL_UNREADY, message, retriable=True)
    if 400 <= status < 500:
        return EngineError(ErrorCode.INVALID_PARAMS, f"engine refused: {message}", False)
    return EngineError(ErrorCode.WORKER_RESET, f"engine error: {message}", retriable=True)


def embeddings_error(refusal: _Refusal, model: str) -> EngineError:
    """An error answer of ``/v1/embeddings``: beyond :func:`engine_error`, a server (or a
    model) that does not embed, and llama-server's input longer than its batch."""
    if refusal.status == 501 or (refusal.status == 404 and not _names_model(refusal)):
        text = (
            f"the engine does not serve embeddings for model {model!r} (HTTP "
            f"{refusal.status}: {refusal.message}); a llama-server needs --embeddings"
        )
        return EngineError(ErrorCode.INVALID_PARAMS, text, retriable=False)
    if "too large to process" in refusal.message:
        text = f"an input has more tokens than the engine can embed at once: {refusal.message}"
        return EngineError(ErrorCode.CTX_LIMIT_EXCEEDED, text, retriable=False)
    return engine_error(refusal, path="/v1/embeddings", model=model)


def parse_chunk(line: bytes, model: str) -> Mapping[str, Any]:
    """One ``data:`` payload as a JSON object; raises EngineError for anything else, an
    error chunk included."""
    try:
        chunk = json.loads(line)
    except ValueError as exc:
        message = f"malformed chunk from engine: {exc}"
        raise EngineError(ErrorCode.WORKER_RESET, message, True) from None
    if not isinstance(chunk, dict):
        raise EngineError(ErrorCode.WORKER_RESET, "malformed chunk from engine", True)
    if "error" in chunk or chunk.get("object") == "error":
        error = chunk.get("error", chunk)
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and not isinstance(code, bool) else 500
        refusal = refusal_from(status, chunk, "error chunk")
        raise engine_error(refusal, path="a stream", model=model)
    return chunk
