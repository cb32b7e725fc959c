"""The llama.cpp adapter: llama-server's native HTTP API, its short calls on one
``httpx.AsyncClient`` and its streams read by :mod:`orchestra.engine.streams`.

Every engine failure leaves it as an
:class:`~orchestra.errors.EngineError` carrying the wire code the task ends with:

======================================================  ==================  =========
engine behaviour                                        code                retriable
======================================================  ==================  =========
no connection at all                                    WORKER_RESET        yes (unreachable)
connection lost / stream ended without its final frame  WORKER_RESET        yes
silent for ``decode_timeout_s``                         DECODE_TIMEOUT      yes
503 (``Loading model``, ``no slot available``)          POOL_UNREADY        yes
400 ``exceed_context_size_error``                       CTX_LIMIT_EXCEEDED  no
other 4xx (``invalid_request_error``, auth)             INVALID_PARAMS      no
500 or ``data: {"error": ...}`` mid-stream              WORKER_RESET        yes
malformed JSON frame                                    WORKER_RESET        yes
``/v1/embeddings``: 501 or 404 (no ``--embeddings``)    INVALID_PARAMS      no
``/v1/embeddings``: 500 ``too large to process``        CTX_LIMIT_EXCEEDED  no
======================================================  ==================  =========

It never sends ``X-Conversation-Id`` (that header would keep generating after a cancel).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx

from orchestra.config import AdapterConfig
from orchestra.engine.protocol import (
    ChatSink,
    Completion,
    Embeddings,
    EngineProps,
    HealthProbe,
    TokenSink,
    ToolCallDelta,
)
from orchestra.engine.streams import HttpxStreams, Streams, raise_transport, stream_timeout
from orchestra.errors import EngineError, ErrorCode

_KEEPALIVE_EXPIRY_S = 3.0
"""An idle pooled connection is closed by orchestra after this long: llama-server
(cpp-httplib) closes one idle for 5 s, and a request sent on it just then would fail."""


def _error_from_payload(status: int, payload: Any, fallback: str) -> EngineError:
    """Map a llama-server error object (``{"code","message","type"}``) to an EngineError."""
    message = fallback
    kind = ""
    if isinstance(payload, dict):
        message = str(payload.get("message", fallback))
        kind = str(payload.get("type", ""))
        code = payload.get("code")
        if isinstance(code, int):
            status = code
    if kind == "exceed_context_size_error":
        return EngineError(ErrorCode.CTX_LIMIT_EXCEEDED, message, retriable=False)
    if status == 503 or kind == "unavailable_error":
        return EngineError(ErrorCode.POOL_UNREADY, message, retriable=True)
    if 400 <= status < 500:
        return EngineError(ErrorCode.INVALID_PARAMS, f"engine refused: {message}", retriable=False)
    return EngineError(ErrorCode.WORKER_RESET, f"engine error: {message}", retriable=True)


def _error_from_body(status: int, body: bytes) -> EngineError:
    try:
        payload = json.loads(body).get("error")
    except (ValueError, AttributeError):
        payload = None
    text = body[:200].decode(errors="replace")
    return _error_from_payload(status, payload, f"HTTP {status}: {text}")


_EMBEDDINGS_OFF = (
    "the engine does not serve embeddings (it was started without --embeddings): set "
    "`embeddings = true` in the model's [models.ID] table"
)


def _embeddings_error(status: int, body: bytes) -> EngineError:
    """An error answer of ``/v1/embeddings`` as an EngineError.

    Beyond :func:`_error_from_body`: a 501 (``not_supported_error``, the engine started
    without ``--embeddings``) or a 404 (no such route) says which key turns embeddings on;
    the 500 of an input longer than the engine's batch (``input (N tokens) is too large to
    process``) fails the same way however often it is retried; the 400 of an engine with
    no pooling (``--pooling none``) says which flag it lacks.
    """
    error = _error_from_body(status, body)
    message = error.message.removeprefix("engine refused: ").removeprefix("engine error: ")
    if status in (404, 501):
        return EngineError(
            ErrorCode.INVALID_PARAMS, f"{_EMBEDDINGS_OFF} (HTTP {status}: {message})", False
        )
    if "too large to process" in message:
        return EngineError(
            ErrorCode.CTX_LIMIT_EXCEEDED,
            f"an input has more tokens than the engine can embed at once: {message}",
            retriable=False,
        )
    if "pooling type" in message.lower():
        return EngineError(
            ErrorCode.INVALID_PARAMS,
            f"the engine cannot embed without pooling (start it with --pooling mean): {message}",
            retriable=False,
        )
    return error


_NUMBER = (float, int)


def _embeddings(answer: Any, n_inputs: int) -> Embeddings:
    """The vectors of a ``/v1/embeddings`` answer in input order; ValueError if malformed."""
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise ValueError("no data list")
    items = answer["data"]
    if len(items) != n_inputs:
        raise ValueError(f"{len(items)} embeddings for {n_inputs} inputs")
    vectors: list[tuple[float, ...] | None] = [None] * n_inputs
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < n_inputs or vectors[index] is not None:
            raise ValueError(f"bad or repeated index {index!r}")
        if not isinstance(vector, list) or not all(type(x) in _NUMBER for x in vector):
            raise ValueError(f"embedding {index} is not a list of numbers")
        vectors[index] = tuple(map(float, vector))
    usage = answer.get("usage")
    tokens = _int_or_none(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    return Embeddings(vectors=tuple(v for v in vectors if v is not None), prompt_tokens=tokens or 0)


def _frame(line: bytes) -> Mapping[str, Any]:
    """One ``data:`` payload as a JSON object; raises EngineError for anything else (an
    error frame included)."""
    try:
        frame = json.loads(line)
    except ValueError as exc:
        message = f"malformed frame from engine: {exc}"
        raise EngineError(ErrorCode.WORKER_RESET, message, True) from None
    if not isinstance(frame, dict):
        raise EngineError(ErrorCode.WORKER_RESET, "malformed frame from engine", True)
    if "error" in frame:
        raise _error_from_payload(500, frame["error"], "error frame")
    return frame


@attrs.define
class _NativeStream:
    """Reads ``/completion``'s frames: text in ``content``; the last one has ``stop``."""

    on_token: TokenSink
    final: Mapping[str, Any] | None = None

    def read(self, line: bytes) -> None:
        frame = _frame(line)
        content = frame.get("content")
        if isinstance(content, str) and content:
            self.on_token(content)
        if frame.get("stop"):
            self.final = frame

    def completion(self) -> Completion:
        if self.final is None:
            raise EngineError(
                ErrorCode.WORKER_RESET, "engine closed the stream before its final frame", True
            )
        final = self.final
        timings = final.get("timings") or {}
        return Completion(
            tokens_out=int(final.get("tokens_predicted", 0)),
            decode_time_ms=float(timings.get("predicted_ms", 0.0)),
            stop_type=str(final.get("stop_type", "")),
            tokens_in=_int_or_none(final.get("tokens_evaluated", timings.get("prompt_n"))),
            prompt_time_ms=float(timings.get("prompt_ms", 0.0)),
            cache_n=_int_or_none(timings.get("cache_n")) or 0,
            slot=_int_or_none(final.get("id_slot")),
        )


_CHAT_STOP_TYPES = {"length": "limit", "tool_calls": "tool_calls"}


@attrs.define
class _ChatStream:
    """Reads ``/v1/chat/completions``' chunks: deltas of text and tool calls, a chunk with
    the ``finish_reason``, one with ``usage`` (and ``timings``), then ``[DONE]``."""

    on_piece: ChatSink
    finish_reason: str | None = None
    usage: Mapping[str, Any] = attrs.field(factory=dict)
    timings: Mapping[str, Any] = attrs.field(factory=dict)
    done: bool = False

    def read(self, line: bytes) -> None:
        if line.strip() == b"[DONE]":
            self.done = True
            return
        frame = _frame(line)
        for choice in frame.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.on_piece(content)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                self.on_piece(
                    ToolCallDelta(
                        index=int(call.get("index", 0)),
                        id=call.get("id"),
                        name=function.get("name"),
                        arguments=str(function.get("arguments") or ""),
                    )
                )
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if isinstance(frame.get("usage"), dict):
            self.usage = frame["usage"]
        if isinstance(frame.get("timings"), dict):
            self.timings = frame["timings"]

    def completion(self) -> Completion:
        if not self.done or self.finish_reason is None:
            raise EngineError(
                ErrorCode.WORKER_RESET, "engine closed the stream before its final chunk", True
            )
        stop_type = _CHAT_STOP_TYPES.get(self.finish_reason, "eos")
        return usage_completion(self.usage, self.timings, stop_type)


def usage_completion(
    usage: Mapping[str, Any], timings: Mapping[str, Any], stop_type: str
) -> Completion:
    """How an OpenAI-shaped answer ended, from its ``usage`` and (llama-server's)
    ``timings``, either of which may be empty."""
    details = usage.get("prompt_tokens_details") or {}
    tokens_out = _int_or_none(usage.get("completion_tokens"))
    return Completion(
        tokens_out=tokens_out or _int_or_none(timings.get("predicted_n")) or 0,
        decode_time_ms=float(timings.get("predicted_ms", 0.0)),
        stop_type=stop_type,
        tokens_in=_int_or_none(usage.get("prompt_tokens", timings.get("prompt_n"))),
        prompt_time_ms=float(timings.get("prompt_ms", 0.0)),
        cache_n=_int_or_none(details.get("cached_tokens", timings.get("cache_n"))) or 0,
    )


def engine_client(
    base_url: str, timeout: httpx.Timeout, api_key: str, max_connections: int
) -> httpx.AsyncClient:
    """An engine's client: a bounded pool whose idle connections close before the engine
    closes them, no compression, ``api_key`` (when given) as ``Authorization: Bearer``,
    and no proxy settings from the environment."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=32,
            keepalive_expiry=_KEEPALIVE_EXPIRY_S,
        ),
        headers={"Accept-Encoding": "identity"}
        | ({"Authorization": f"Bearer {api_key}"} if api_key else {}),
        trust_env=False,
    )


@attrs.define
class LlamaCppAdapter:
    """llama-server's API: ``/health``, ``/props``, ``/tokenize``, ``/apply-template``,
    ``/completion``, ``/v1/chat/completions`` and ``/v1/embeddings``.

    Owns nothing but a reference to the shared client (whose lifetime the service owns).
    Cancellation inside :meth:`complete` closes the engine stream before it propagates,
    which is what frees the llama.cpp slot.
    """

    client: httpx.AsyncClient
    config: AdapterConfig
    streams: Streams = attrs.field(
        default=attrs.Factory(lambda self: HttpxStreams(self.client), takes_self=True)
    )
    """How its streams are read: through ``client`` unless told (the service gives every
    ``http://`` engine :class:`~orchestra.engine.streams.SocketStreams`)."""

    @classmethod
    def open_client(
        cls, config: AdapterConfig, *, max_connections: int = 64, api_key: str = ""
    ) -> httpx.AsyncClient:
        """A client for ``config.endpoint`` with bounded timeouts and connection pool,
        sending ``api_key`` (when given) as the bearer token llama-server demands."""
        timeout = stream_timeout(config.connect_timeout_s, config.decode_timeout_s)
        return engine_client(config.endpoint, timeout, api_key, max_connections)

    @property
    def _short(self) -> httpx.Timeout:
        return httpx.Timeout(self.config.connect_timeout_s)

    async def _get_json(self, path: str) -> tuple[int, Any]:
        try:
            response = await self.client.get(path, timeout=self._short)
        except httpx.HTTPError as exc:
            raise_transport(exc, path)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def health(self) -> HealthProbe:
        """Probe ``/health``; raises EngineError only when the engine cannot be reached."""
        status, body = await self._get_json("/health")
        if status == 200:
            return HealthProbe(ready=True, detail="ok")
        detail = f"HTTP {status}"
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = str(body["error"].get("message", detail))
        return HealthProbe(ready=False, detail=detail)

    async def props(self) -> EngineProps:
        """Read ``/props``: slot count, context size and build of the running engine."""
        status, body = await self._get_json("/props")
        if status != 200 or not isinstance(body, dict):
            raise _error_from_payload(status, (body or {}).get("error"), f"/props: HTTP {status}")
        settings = body.get("default_generation_settings") or {}
        return EngineProps(
            total_slots=int(body.get("total_slots", 1)),
            n_ctx=int(settings.get("n_ctx", 0)),
            build_info=str(body.get("build_info", "")),
            model_path=str(body.get("model_path", "")),
        )

    async def _post_field(self, path: str, body: Mapping[str, Any], field: str) -> Any:
        """POST ``body`` to ``path`` (a short call); the answer's ``field``."""
        try:
            response = await self.client.post(path, json=body, timeout=self._short)
        except httpx.HTTPError as exc:
            raise_transport(exc, path)
        if response.status_code != 200:
            raise _error_from_body(response.status_code, response.content)
        try:
            return response.json()[field]
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(ErrorCode.WORKER_RESET, f"malformed {path} answer", True) from exc

    async def count_tokens(self, text: str) -> int:
        """Tokens the engine will see for ``text`` as a prompt (special tokens included)."""
        tokens = await self._post_field(
            "/tokenize", {"content": text, "add_special": True}, "tokens"
        )
        return len(tokens)

    async def complete(self, params: Mapping[str, Any], on_token: TokenSink) -> Completion:
        """Stream one generation from ``/completion``, calling ``on_token`` per piece;
        return how it ended.

        Raises EngineError on any failure; on cancellation the HTTP stream is closed.
        """
        reader = _NativeStream(on_token)
        await self._stream("/completion", {**params, "stream": True}, reader.read)
        return reader.completion()

    async def chat(self, params: Mapping[str, Any], on_piece: ChatSink) -> Completion:
        """Stream one chat answer from ``/v1/chat/completions`` (the engine renders the
        messages with the model's template and parses tool calls), calling ``on_piece``
        per piece of text or of a tool call; return how it ended.

        Raises EngineError on any failure; on cancellation the HTTP stream is closed.
        """
        reader = _ChatStream(on_piece)
        body = {**params, "stream": True, "stream_options": {"include_usage": True}}
        await self._stream("/v1/chat/completions", body, reader.read)
        return reader.completion()

    async def _stream(
        self, path: str, body: Mapping[str, Any], read: Callable[[bytes], None]
    ) -> None:
        await self.streams.post_sse(path, body, read, _error_from_body)

    async def render_chat(self, params: Mapping[str, Any]) -> str:
        """The prompt the engine makes of a chat body's ``messages`` and ``tools`` with the
        model's chat template (``POST /apply-template``)."""
        body = {k: params[k] for k in ("messages", "tools", "tool_choice") if k in params}
        return str(await self._post_field("/apply-template", body, "prompt"))

    async def embed(self, inputs: Sequence[str]) -> Embeddings:
        """One vector per string of ``inputs``, in their order (``POST /v1/embeddings``,
        always with a list ``input`` so that the answer is always a list).

        Waits as long as a stream may stay silent (``decode_timeout_s``): the engine
        answers only once it has embedded every input, and queues them behind busy slots.
        Raises EngineError as :meth:`Engine.embed` says; on cancellation the connection is
        closed, which makes the engine drop the request's tasks.
        """
        if isinstance(inputs, str):
            raise TypeError("embed() takes a sequence of strings, not one string")
        texts = list(inputs)
        path = "/v1/embeddings"
        try:
            response = await self.client.post(
                path, json={"input": texts, "encoding_format": "float"}
            )
        except httpx.HTTPError as exc:
            raise_transport(exc, path)
        if response.status_code != 200:
            raise _embeddings_error(response.status_code, response.content)
        try:
            return _embeddings(response.json(), len(texts))
        except ValueError as exc:
            message = f"malformed {path} answer: {exc}"
            raise EngineError(ErrorCode.WORKER_RESET, message, True) from exc

    async def erase_slot(self, slot: int) -> bool:
        """Erase what slot ``slot`` holds in its KV cache (``POST /slots/N?action=erase``).

        True once erased; False when the engine refuses slot actions (started without
        ``--slot-save-path``: 501). Waits while the slot is busy (the engine finishes the
        slot's task first); raises EngineError when the engine cannot be reached.
        """
        try:
            response = await self.client.post(
                f"/slots/{slot}", params={"action": "erase"}, timeout=self._short
            )
        except httpx.HTTPError as exc:
            raise_transport(exc, "/slots")
        return response.status_code == 200


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
