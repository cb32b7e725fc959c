"""The OpenAI face's wire (``specs/openapi/openai.yaml``) as the SDK reads it:
:class:`ChatStream`, a chat answer's stream of chunks read as typed
:class:`~orchestra.sdk.ChatDelta` pieces (a refusal's error object is read by
:mod:`orchestra.sdk._error_answers`).

An OpenAI stream is ``data: {chunk}`` frames (``: keepalive`` comments between), then
``data: [DONE]``; a task that fails or is cancelled ends it with one ``data: {"error":
{...}}`` frame and no ``[DONE]``. It cannot be resumed: the server cancels the task of a
client that leaves, so closing a :class:`ChatStream` early cancels its task.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, cast

import attrs
import httpx

from orchestra.errors import ErrorCode
from orchestra.sdk._chat import (
    ChatCompletion,
    ChatDelta,
    FunctionCall,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from orchestra.sdk._convert import structure
from orchestra.sdk._errors import (
    OrchestraError,
    ParseError,
    TaskFailed,
    TransportError,
)
from orchestra.sdk._sse import RawEvent, SSEDecoder

CHAT_PATH = "/v1/chat/completions"
DONE = "[DONE]"

# -- the chunks of a stream --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _FunctionPiece:
    name: str | None = None
    arguments: str | None = None


@attrs.frozen(kw_only=True)
class _ToolCallPiece:
    index: int
    id: str | None = None
    function: _FunctionPiece | None = None


@attrs.frozen(kw_only=True)
class _Delta:
    content: str | None = None
    tool_calls: tuple[_ToolCallPiece, ...] | None = None


@attrs.frozen(kw_only=True)
class _Choice:
    index: int
    delta: _Delta
    finish_reason: str | None = None


@attrs.frozen(kw_only=True)
class _PromptDetails:
    cached_tokens: int = 0


@attrs.frozen(kw_only=True)
class _Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails | None = None


@attrs.frozen(kw_only=True)
class _Chunk:
    id: str
    model: str
    choices: tuple[_Choice, ...]
    usage: _Usage | None = None
    artifact_id: str | None = None
    artifact_error: str | None = None


@attrs.frozen(kw_only=True)
class _StreamError:
    code: ErrorCode
    message: str = ""
    retriable: bool = False


@attrs.frozen
class _ErrorChunk:
    error: _StreamError


@attrs.define
class _Call:
    """A tool call being assembled from its pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = attrs.field(factory=list)


Opener = Callable[[], Awaitable[httpx.Response]]
"""Sends the request and returns its (successful, not yet read) streamed response."""


@attrs.define(eq=False)
class ChatStream:
    """A streamed chat answer: typed :class:`~orchestra.sdk.ChatDelta` pieces, in order,
    ending with the piece that has ``finish_reason`` and ``usage``::

        async with client.stream_chat(messages) as stream:
            print(stream.task_id)                 # known once the answer began
            async for delta in stream:
                print(delta.content, end="")
        answer = stream.completion()             # the whole answer, assembled

    Entering the block sends the request (a refusal raises there); iterating without it
    sends it at the first piece. Leaving the block (or :meth:`aclose`, or
    ``contextlib.aclosing``) closes the HTTP stream, which makes the server cancel the
    task at once if it has not ended. A stream that ends with the server's error chunk
    (the task cancelled, the engine failed) raises :class:`~orchestra.sdk.TaskFailed`
    with the text so far.
    """

    _opener: Opener
    _response: httpx.Response | None = None
    _body: AsyncIterator[bytes] | None = None
    _decoder: SSEDecoder = attrs.field(factory=SSEDecoder)
    _pending: list[ChatDelta] = attrs.field(factory=list)
    _task_id: str | None = None
    correlation_id: str | None = None
    """The server's ``X-Correlation-Id`` for this request, once the answer began."""
    _id: str = ""
    _model: str = ""
    _text: list[str] = attrs.field(factory=list)
    _calls: dict[int, _Call] = attrs.field(factory=dict)
    _finish_reason: str | None = None
    _usage: Usage | None = None
    _artifact: tuple[str | None, str | None] = (None, None)
    """The answer's ``artifact_id`` and ``artifact_error``, from its last chunk."""
    _done: bool = False
    """``[DONE]`` was read: the answer is whole."""
    _failure: OrchestraError | None = None
    _closed: bool = False

    # -- the stream's life --------------------------------------------------------------------

    @property
    def task_id(self) -> str:
        """The orchestra task of this answer (``X-Task-Id``), once the answer began."""
        if self._task_id is None:
            raise RuntimeError("the chat stream has not been opened (enter it, or iterate)")
        return self._task_id

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._text)

    @property
    def done(self) -> bool:
        """True once the whole answer was received."""
        return self._done

    async def open(self) -> ChatStream:
        """Send the request and wait for the answer to begin (idempotent)."""
        if self._response is None and not self._closed:
            response = await self._opener()
            self._response = response
            task_id = response.headers.get("X-Task-Id")
            self.correlation_id = response.headers.get("X-Correlation-Id")
            content_type = response.headers.get("content-type", "")
            if not task_id or not content_type.startswith("text/event-stream"):
                await self.aclose()
                raise ParseError(
                    f"POST {CHAT_PATH}: not a chat stream (content-type {content_type!r}, "
                    f"X-Task-Id {task_id!r})",
                    response.status_code,
                )
            self._task_id = task_id
            self._body = response.aiter_bytes()
        return self

    async def aclose(self) -> None:
        """Close the HTTP stream; the server cancels the task if it has not ended."""
        self._closed = True
        body, response = self._body, self._response
        self._body = None
        if body is not None:
            with contextlib.suppress(httpx.HTTPError):
                await cast(Any, body).aclose()
        if response is not None:
            await response.aclose()

    async def __aenter__(self) -> ChatStream:
        try:
            return await self.open()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ChatStream:
        return self  # not an async generator: a reader may stop at any piece

    async def __anext__(self) -> ChatDelta:
        await self.open()
        while not self._pending:
            if self._failure is not None:
                raise self._failure
            if self._done or self._body is None:
                await self._drain()
                raise StopAsyncIteration
            chunk = await self._read()
            if chunk is None:  # the body ended before [DONE] or an error chunk
                self._failure = TransportError(
                    f"chat stream of task {self._task_id}: it ended before its last chunk"
                )
                await self.aclose()
                continue
            for raw in self._decoder.feed(chunk):
                self._frame(raw)
            if self._failure is not None:
                await self.aclose()
        return self._pending.pop(0)

    async def _read(self) -> bytes | None:
        assert self._body is not None
        try:
            return await self._body.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.RequestError as exc:
            await self.aclose()
            reason = str(exc) or type(exc).__name__
            raise TransportError(f"chat stream of task {self._task_id}: {reason}") from exc

    async def _drain(self) -> None:
        """After ``[DONE]``: read the body to its end (the server closes it), then close."""
        if self._body is not None:
            with contextlib.suppress(httpx.HTTPError):
                async for _ in self._body:
                    pass
        await self.aclose()

    async def collect(self) -> ChatCompletion:
        """Read the rest of the stream; the whole answer."""
        async for _ in self:
            pass
        return self.completion()

    # -- reading the chunks -------------------------------------------------------------------

    def _frame(self, raw: RawEvent) -> None:
        if self._done or self._failure is not None:
            return
        where = f"chat stream of task {self._task_id}"
        if raw.data == DONE:
            if self._finish_reason is None or self._usage is None:
                self._failure = ParseError(f"{where}: [DONE] before finish_reason and usage")
                return
            self._done = True
            self._pending.append(ChatDelta(finish_reason=self._finish_reason, usage=self._usage))
            return
        try:
            data = json.loads(raw.data)
        except ValueError:
            self._failure = ParseError(f"{where}: a chunk that is not JSON: {raw.data[:120]!r}")
            return
        try:
            if isinstance(data, dict) and "error" in data:
                error = structure(data, _ErrorChunk, what=f"{where}: error chunk").error
                self._failure = TaskFailed(
                    code=error.code,
                    message=error.message or str(error.code),
                    retriable=error.retriable,
                    correlation_id=self.correlation_id,
                    task_id=self.task_id,
                    text=self.text,
                )
                return
            self._chunk(structure(data, _Chunk, what=f"{where}: chunk"))
        except ParseError as exc:
            self._failure = exc

    def _chunk(self, chunk: _Chunk) -> None:
        self._id, self._model = chunk.id, chunk.model
        if chunk.artifact_id is not None or chunk.artifact_error is not None:
            self._artifact = (chunk.artifact_id, chunk.artifact_error)
        if chunk.usage is not None:
            details = chunk.usage.prompt_tokens_details
            self._usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
                total_tokens=chunk.usage.total_tokens,
                cached_tokens=0 if details is None else details.cached_tokens,
            )
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # n is always 1
            content = choice.delta.content or ""
            pieces = tuple(self._tool_call(p) for p in choice.delta.tool_calls or ())
            if content or pieces:
                self._text.append(content)
                self._pending.append(ChatDelta(content=content, tool_calls=pieces))
            if choice.finish_reason is not None:
                self._finish_reason = choice.finish_reason

    def _tool_call(self, piece: _ToolCallPiece) -> ToolCallDelta:
        call = self._calls.setdefault(piece.index, _Call())
        function = piece.function or _FunctionPiece()
        if piece.id:
            call.id = piece.id
        if function.name:
            call.name = function.name
        call.arguments.append(function.arguments or "")
        return ToolCallDelta(
            index=piece.index,
            id=piece.id,
            name=function.name,
            arguments=function.arguments or "",
        )

    def completion(self) -> ChatCompletion:
        """The whole answer; only once the stream has ended (else ``RuntimeError``)."""
        if not self._done:
            if self._failure is not None:
                raise self._failure
            raise RuntimeError("the chat stream has not ended yet")
        assert self._finish_reason is not None and self._usage is not None
        return ChatCompletion(
            task_id=self.task_id,
            id=self._id,
            model=self._model,
            text=self.text,
            finish_reason=self._finish_reason,
            tool_calls=tuple(
                ToolCall(
                    id=call.id,
                    function=FunctionCall(name=call.name, arguments="".join(call.arguments)),
                )
                for _, call in sorted(self._calls.items())
            ),
            usage=self._usage,
            correlation_id=self.correlation_id,
            artifact_id=self._artifact[0],
            artifact_error=self._artifact[1],
        )
