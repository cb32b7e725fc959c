"""The adapter for any OpenAI-compatible server (vLLM, SGLang, TGI, Ollama, another
orchestra, llama-server's own ``/v1`` endpoints) on one ``httpx.AsyncClient``.

:class:`OpenAICompatAdapter` is an :class:`~orchestra.engine.protocol.Engine` speaking
``GET /v1/models`` (health, props), ``POST /v1/completions`` (a native ``/completion`` body
translated), ``POST /v1/chat/completions`` and ``POST /v1/embeddings``, every answer
streamed with ``stream_options.include_usage``. Like :mod:`orchestra.engine.llamacpp`
(whose chat reader, transport mapping and embeddings parser it reuses), it lets no
``httpx`` error out: every failure is an :class:`~orchestra.errors.EngineError` carrying
the wire code the task ends with. Error bodies may be OpenAI's ``{"error": {"message",
"type", "code"}}`` (llama-server, recent vLLM), vLLM's older ``{"object": "error",
"message", ...}``, ``{"error": "text"}`` (Ollama, TGI) or FastAPI's ``{"detail": ...}``:

===========================================================  ==================  =========
engine behaviour                                             code                retriable
===========================================================  ==================  =========
no connection at all                                         WORKER_RESET        yes (unreachable)
connection lost; stream ended without ``[DONE]`` or finish   WORKER_RESET        yes
silent for ``decode_timeout_s``                              DECODE_TIMEOUT      yes
429 (rate limited), 503 (loading, overloaded)                POOL_UNREADY        yes
says the context is too short, whatever the status (1)       CTX_LIMIT_EXCEEDED  no
401, 403: the api key refused                                INVALID_PARAMS      no
404 naming the model (not served; the message names it)      INVALID_PARAMS      no
404 otherwise (no such route), 400, 422, other 4xx           INVALID_PARAMS      no
500, 502, 504, other 5xx                                     WORKER_RESET        yes
``data: {"error": ...}`` mid-stream (2)                      by its ``code``     as that
malformed JSON chunk                                         WORKER_RESET        yes
``/v1/embeddings``: 501, or 404 not naming the model         INVALID_PARAMS      no
``/v1/embeddings``: ``too large to process`` (llama-server)  CTX_LIMIT_EXCEEDED  no
===========================================================  ==================  =========

(1) the message says ``context length`` or ``maximum context`` (vLLM, SGLang), the type is
``exceed_context_size_error`` (llama-server) or the code ``context_length_exceeded``
(OpenAI). (2) mapped as an answer whose status is the chunk's own ``code``, else as a 500.

What such an engine does not give orchestra, next to llama-server's native API:

- no slots: the capacity is ``slots`` from the configuration; ``id_slot`` and
  ``cache_prompt`` are not sent, so a session's turns are not pinned to a slot and reuse
  of the KV cache is the server's own business (vLLM's prefix caching, say);
  :meth:`~OpenAICompatAdapter.erase_slot` erases nothing; there is no ``/slots``;
- no tokenizer: :meth:`~OpenAICompatAdapter.count_tokens` and
  :meth:`~OpenAICompatAdapter.render_chat` answer admission's own byte bounds (UTF-8 bytes
  + 2; a chat's JSON plus the template's allowance), so admission decides on those bounds
  and the server refuses what its context cannot hold (``CTX_LIMIT_EXCEEDED``);
- determinism only as far as the server honours ``seed`` (vLLM does per request; batching
  may still change results);
- ``stop_type`` ``word`` only where the server says which stop string matched (vLLM's
  ``stop_reason``); elsewhere a stop is ``eos``; timings only where the server adds
  llama-server's ``timings``, else the decode time is measured here (first to last piece)
  and the prompt time is 0.

Only these keys of a native body are sent: ``prompt`` (or ``messages``, ``tools``,
``tool_choice``, ``parallel_tool_calls``, ``response_format``), ``n_predict`` as
``max_tokens``, the sampling fields of :data:`orchestra.task.SAMPLING_FIELDS` (``top_k``,
``min_p`` and ``repeat_penalty`` as extra keys, which vLLM, SGLang and llama-server take),
``stop``, ``logit_bias`` (as OpenAI's ``{"TOKEN": bias}``) and a completion's
``json_schema`` (as ``response_format``, and as itself for llama-server, whose
``/v1/completions`` ignores ``response_format``). Every stream is sent with
``Connection: close``, as in the llama.cpp adapter, and cancellation closes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import trio

from orchestra.engine.llamacpp import (
    _ChatStream,
    _embeddings,
    _int_or_none,
    engine_client,
    usage_completion,
)
from orchestra.engine.openai_errors import (
    answer_refusal,
    embeddings_error,
    engine_error,
    parse_chunk,
)
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
from orchestra.task import SAMPLING_FIELDS

_CHAT_FIELDS = ("messages", "tools", "tool_choice", "parallel_tool_calls")

_TEMPLATE_ALLOWANCE = 64
_TOOLS_ALLOWANCE = 1024
"""The allowances admission adds to a chat's JSON for its template (and its tools), in
``orchestra.actors.admission``: :meth:`OpenAICompatAdapter.render_chat` pads its stand-in
by as many bytes, so that counting it gives admission's own bound."""


# -- streams ---------------------------------------------------------------------------------


@attrs.define
class _Clock:
    """When the first and the last piece of an answer came, and how many came."""

    first: float | None = None
    last: float = 0.0
    pieces: int = 0

    def tick(self) -> None:
        now = trio.current_time()
        if self.first is None:
            self.first = now
        self.last = now
        self.pieces += 1

    @property
    def decode_ms(self) -> float:
        return 0.0 if self.first is None else (self.last - self.first) * 1000


def _stop_type(finish_reason: str, stop_reason: Any) -> str:
    if finish_reason == "length":
        return "limit"
    if finish_reason == "stop" and isinstance(stop_reason, str) and stop_reason:
        return "word"  # vLLM names the stop string it matched
    return "eos"


@attrs.define
class _TextStream:
    """Reads ``/v1/completions``' chunks: pieces of ``choices[0].text``, a chunk with the
    ``finish_reason``, ``usage`` (and, from llama-server, ``timings``), then ``[DONE]``."""

    on_token: TokenSink
    model: str
    clock: _Clock = attrs.field(factory=_Clock)
    finish_reason: str | None = None
    stop_reason: Any = None
    usage: Mapping[str, Any] = attrs.field(factory=dict)
    timings: Mapping[str, Any] = attrs.field(factory=dict)
    done: bool = False

    def read(self, line: bytes) -> None:
        if line == b"[DONE]":
            self.done = True
            return
        chunk = parse_chunk(line, self.model)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            text = choice.get("text")
            if isinstance(text, str) and text:
                self.clock.tick()
                self.on_token(text)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
                self.stop_reason = choice.get("stop_reason")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]

    def completion(self) -> Completion:
        if not self.done or self.finish_reason is None:
            raise EngineError(
                ErrorCode.WORKER_RESET, "engine closed the stream before its final chunk", True
            )
        stop_type = _stop_type(self.finish_reason, self.stop_reason)
        done = usage_completion(self.usage, self.timings, stop_type)
        return _timed(done, self.timings, self.clock)


def _timed(done: Completion, timings: Mapping[str, Any], clock: _Clock) -> Completion:
    """``done`` with the decode time measured here when the engine gave none, and the
    pieces counted as tokens when it did not say how many it generated."""
    if "predicted_ms" not in timings:
        done = attrs.evolve(done, decode_time_ms=clock.decode_ms)
    if done.tokens_out == 0 and clock.pieces:
        done = attrs.evolve(done, tokens_out=clock.pieces)
    return done


# -- bodies ----------------------------------------------------------------------------------


def _logit_bias(given: Any) -> dict[str, Any]:
    """llama.cpp's ``[[token, bias], ...]`` (or a mapping) as OpenAI's ``{"TOKEN": bias}``."""
    pairs = given.items() if isinstance(given, Mapping) else given
    return {str(token): bias for token, bias in pairs}


def _response_format(given: Any) -> Any:
    """A ``json_schema`` response format with the ``name`` OpenAI (and vLLM) require."""
    if not isinstance(given, Mapping) or given.get("type") != "json_schema":
        return given
    spec = given.get("json_schema")
    if isinstance(spec, Mapping) and "name" not in spec:
        return {**given, "json_schema": {"name": "output", **spec}}
    return given


def _body(params: Mapping[str, Any], model: str, *, chat: bool) -> dict[str, Any]:
    """The OpenAI body of a native ``/completion`` body (or of a chat body as orchestra
    would send it to llama-server), streamed with usage; see the module docstring."""
    body: dict[str, Any] = {"model": model}
    if chat:
        body.update({k: params[k] for k in _CHAT_FIELDS if k in params})
        if "response_format" in params:
            body["response_format"] = _response_format(params["response_format"])
    else:
        body["prompt"] = params.get("prompt", "")
        schema = params.get("json_schema")
        if schema is not None:
            spec = {"name": "output", "schema": schema}
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
            body["json_schema"] = schema
    n_predict = params.get("n_predict", params.get("max_tokens"))
    if isinstance(n_predict, int) and n_predict >= 0:
        body["max_tokens"] = n_predict
    body.update({k: params[k] for k in SAMPLING_FIELDS if params.get(k) is not None})
    if params.get("stop"):
        body["stop"] = list(params["stop"])
    if params.get("logit_bias"):
        body["logit_bias"] = _logit_bias(params["logit_bias"])
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


def _chat_stand_in(params: Mapping[str, Any]) -> str:
    """What :meth:`OpenAICompatAdapter.render_chat` answers for lack of a template: the JSON
    admission bounds a chat by, padded by the template's allowance."""
    tools = list(params.get("tools") or ())
    text = json.dumps([list(params.get("messages") or ()), tools], ensure_ascii=False)
    return text + " " * (_TEMPLATE_ALLOWANCE + (_TOOLS_ALLOWANCE if tools else 0))


def _model_card(body: Any, model: str) -> Mapping[str, Any]:
    """The entry of ``/v1/models``' ``data`` whose ``id`` is ``model`` (else the first)."""
    data = body.get("data") if isinstance(body, dict) else None
    cards = [card for card in data if isinstance(card, dict)] if isinstance(data, list) else []
    return next((card for card in cards if card.get("id") == model), cards[0] if cards else {})


# -- the adapter -----------------------------------------------------------------------------


@attrs.define
class OpenAICompatAdapter:
    """An OpenAI-compatible server's API: ``/v1/models``, ``/v1/completions``,
    ``/v1/chat/completions`` and ``/v1/embeddings``, asking for ``model`` in every body.

    Owns nothing but a reference to the shared client (whose lifetime the service owns).
    Short calls wait ``connect_timeout_s``; a stream may stay silent ``decode_timeout_s``.
    Cancellation inside :meth:`complete`, :meth:`chat` or :meth:`embed` closes the
    connection before it propagates, which is how such servers learn to stop.
    """

    client: httpx.AsyncClient
    model: str
    """The served model name every body asks for (vLLM's ``--served-model-name``)."""
    slots: int = attrs.field(validator=attrs.validators.ge(1))
    """How many generations orchestra runs on it at once (such servers do not say)."""
    decode_timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    """Seconds a stream (or an embedding) may stay silent before the task fails."""
    connect_timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    """Seconds to connect, and for the short calls (``/v1/models``)."""
    streams: Streams = attrs.field(
        default=attrs.Factory(lambda self: HttpxStreams(self.client, self._long), takes_self=True)
    )
    """How its streams are read: through ``client`` unless told (the service gives every
    ``http://`` server :class:`~orchestra.engine.streams.SocketStreams`)."""

    @classmethod
    def open_client(
        cls,
        base_url: str,
        *,
        connect_timeout_s: float,
        api_key: str = "",
        max_connections: int = 64,
    ) -> httpx.AsyncClient:
        """A client for the server at ``base_url`` (its root; a trailing ``/v1``, as OpenAI
        clients take it, is dropped) with a bounded connection pool, sending ``api_key``
        (when given) as ``Authorization: Bearer``. Use it as an async context manager."""
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/").removesuffix("/v1")
        base = urlunsplit(parts._replace(path=path))
        return engine_client(base, httpx.Timeout(connect_timeout_s), api_key, max_connections)

    @property
    def _short(self) -> httpx.Timeout:
        return httpx.Timeout(self.connect_timeout_s)

    @property
    def _long(self) -> httpx.Timeout:
        return stream_timeout(self.connect_timeout_s, self.decode_timeout_s)

    def _error(self, path: str, status: int, content: bytes) -> EngineError:
        return engine_error(answer_refusal(status, content), path=path, model=self.model)

    async def _models(self) -> tuple[int, bytes]:
        try:
            response = await self.client.get("/v1/models", timeout=self._short)
        except httpx.HTTPError as exc:
            raise_transport(exc, "/v1/models")
        return response.status_code, response.content

    async def health(self) -> HealthProbe:
        """Probe ``GET /v1/models``: ready on 200; else not ready, ``detail`` saying why (the
        api key refused, the server loading...). Raises EngineError only when the engine
        cannot be reached."""
        status, content = await self._models()
        if status == 200:
            return HealthProbe(ready=True, detail="ready")
        return HealthProbe(ready=False, detail=self._error("/v1/models", status, content).message)

    async def props(self) -> EngineProps:
        """``slots`` and ``model`` as configured; from ``GET /v1/models``, the context size
        where the server reports one (vLLM's and SGLang's ``max_model_len``; else 0) and
        who serves the model (``owned_by``) in ``build_info``."""
        status, content = await self._models()
        if status != 200:
            raise self._error("/v1/models", status, content)
        try:
            card = _model_card(json.loads(content), self.model)
        except ValueError:
            card = {}
        owner = card.get("owned_by")
        build_info = f"openai-compatible {str(self.client.base_url).rstrip('/')}"
        if isinstance(owner, str) and owner:
            build_info += f" ({owner})"
        return EngineProps(
            total_slots=self.slots,
            n_ctx=_int_or_none(card.get("max_model_len")) or 0,
            build_info=build_info,
            model_path=self.model,
        )

    async def count_tokens(self, text: str) -> int:
        """An upper bound on the tokens of ``text``, not a count: such servers have no
        standard tokenizer endpoint. It is admission's own bound (UTF-8 bytes + 2: every
        token covers a byte at least, plus BOS and a space prefix), so admission, which asks
        only when that bound does not fit, decides on the bound: it lowers a fitted
        ``max_tokens`` to what the bound leaves, or refuses (``CTX_LIMIT_EXCEEDED``)."""
        await trio.lowlevel.checkpoint()
        return len(text.encode()) + 2

    async def render_chat(self, params: Mapping[str, Any]) -> str:
        """Not a rendering (there is no template to ask): a stand-in whose
        :meth:`count_tokens` is admission's JSON-size bound of the chat (the JSON of its
        messages and tools, plus the template's allowance), so admission keeps that bound."""
        await trio.lowlevel.checkpoint()
        return _chat_stand_in(params)

    async def erase_slot(self, slot: int) -> bool:
        """False: such servers have no slots to erase."""
        await trio.lowlevel.checkpoint()
        return False

    async def complete(self, params: Mapping[str, Any], on_token: TokenSink) -> Completion:
        """Stream one generation of a native ``/completion`` body from ``/v1/completions``
        (translated, see the module docstring), calling ``on_token`` per non-empty piece;
        return how it ended.

        Raises EngineError on any failure; on cancellation the HTTP stream is closed.
        """
        reader = _TextStream(on_token, self.model)
        body = _body(params, self.model, chat=False)
        await self._stream("/v1/completions", body, reader.read)
        return reader.completion()

    async def chat(self, params: Mapping[str, Any], on_piece: ChatSink) -> Completion:
        """Stream one chat answer from ``/v1/chat/completions`` (the body orchestra would
        send llama-server, translated), calling ``on_piece`` per piece of text or of a tool
        call; return how it ended.

        Raises EngineError on any failure; on cancellation the HTTP stream is closed.
        """
        clock = _Clock()

        def piece(value: str | ToolCallDelta) -> None:
            clock.tick()
            on_piece(value)

        reader = _ChatStream(piece)

        def read(line: bytes) -> None:
            if b'"error"' in line:  # an error chunk: mapped here, not as llama-server's
                parse_chunk(line, self.model)
            reader.read(line)

        await self._stream("/v1/chat/completions", _body(params, self.model, chat=True), read)
        return _timed(reader.completion(), reader.timings, clock)

    async def _stream(
        self, path: str, body: Mapping[str, Any], read: Callable[[bytes], None]
    ) -> None:
        def error(status: int, answer: bytes) -> EngineError:
            return self._error(path, status, answer)

        await self.streams.post_sse(path, body, read, error)

    async def embed(self, inputs: Sequence[str]) -> Embeddings:
        """One vector per string of ``inputs``, in their order (``POST /v1/embeddings``
        with ``model`` and a list ``input``).

        Waits as long as a stream may stay silent (``decode_timeout_s``). Raises EngineError
        as :meth:`Engine.embed` says (a server or model that does not embed: 501, or 404
        not naming the model); on cancellation the connection is closed.
        """
        if isinstance(inputs, str):
            raise TypeError("embed() takes a sequence of strings, not one string")
        texts = list(inputs)
        path = "/v1/embeddings"
        body = {"model": self.model, "input": texts, "encoding_format": "float"}
        try:
            response = await self.client.post(path, json=body, timeout=self._long)
        except httpx.HTTPError as exc:
            raise_transport(exc, path)
        if response.status_code != 200:
            refusal = answer_refusal(response.status_code, response.content)
            raise embeddings_error(refusal, self.model)
        try:
            return _embeddings(response.json(), len(texts))
        except ValueError as exc:
            message = f"malformed {path} answer: {exc}"
            raise EngineError(ErrorCode.WORKER_RESET, message, True) from exc
