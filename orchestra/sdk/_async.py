"""``AsyncClient``: the SDK over HTTP (httpx), for code that runs under Trio."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote

import attrs
import httpx
import trio

from orchestra import __version__
from orchestra.sdk._artifacts import ArtifactCalls
from orchestra.sdk._chat import ChatCompletion, ChatRequest, Message, chat_body
from orchestra.sdk._convert import event_from_wire, request_body, structure
from orchestra.sdk._error_answers import error_from_response
from orchestra.sdk._errors import (
    OrchestraError,
    ParseError,
    ServerError,
    TaskFailed,
    TransportError,
)
from orchestra.sdk._events import End, Error, Event, Started, Token
from orchestra.sdk._models import (
    CancelResult,
    Capabilities,
    CatalogModel,
    Completion,
    DeletedSession,
    DrainResult,
    Embeddings,
    Health,
    ReplicaSet,
    ResumeResult,
    SessionStatus,
    TaskHandle,
    TaskRequest,
    TaskStatus,
    TaskSummary,
    UnloadedModel,
)
from orchestra.sdk._openai import CHAT_PATH, ChatStream
from orchestra.sdk._retry import Retry
from orchestra.sdk._sse import RawEvent, SSEDecoder

if TYPE_CHECKING:
    from orchestra.config import Config

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "ORCHESTRA_URL"
TOKEN_ENV = "ORCHESTRA_TOKEN"
STREAM_IDLE_S = 45.0
"""A stream silent this long (three missed keep-alives) counts as dropped and is resumed."""
CANCEL_ON_ABANDON_S = 5.0
"""How long ``complete()``, when cancelled, tries to cancel its task on the server."""
LOAD_TIMEOUT_S = 600.0
"""The least read timeout of a call that may wait for a model to load (or its tasks to end):
``load_model()``, ``unload_model()``, ``embed()``."""
EMBEDDINGS_PATH = "/v1/embeddings"
DRAIN_DEADLINE_MS = 30_000
"""The server's drain deadline when a ``drain()`` gives none."""
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@attrs.frozen
class _ModelList:
    """``GET /v1/models``: OpenAI's list shape, ``{"object": "list", "data": [...]}``."""

    data: tuple[CatalogModel, ...]


@attrs.frozen
class _TaskList:
    """``GET /v1/tasks``: ``{"tasks": [...]}``."""

    tasks: tuple[TaskSummary, ...]


@attrs.frozen
class _ReplicaSets:
    """``GET /v1/replicasets``: ``{"replicasets": [...]}``."""

    replicasets: tuple[ReplicaSet, ...]


@attrs.frozen(kw_only=True)
class _Embedding:
    index: int
    embedding: tuple[float, ...]


@attrs.frozen(kw_only=True)
class _EmbeddingUsage:
    prompt_tokens: int


@attrs.frozen(kw_only=True)
class _EmbeddingList:
    """``POST /v1/embeddings``: OpenAI's shape."""

    data: tuple[_Embedding, ...]
    model: str
    usage: _EmbeddingUsage


def model_file(path_or_id: str) -> tuple[str, str | None]:
    """What ``load_model(path_or_id)`` loads: the model id, and the absolute path of the
    file to register under it first (None for an id). A path has a path separator or ends
    with ``.gguf``; its id is the file's name without ``.gguf``."""
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if not path_or_id.endswith(".gguf") and not separators & set(path_or_id):
        return path_or_id, None
    path = os.path.abspath(os.path.expanduser(path_or_id))
    return os.path.basename(path).removesuffix(".gguf"), path


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _transport_error(exc: httpx.RequestError, what: str) -> TransportError:
    reason = str(exc) or type(exc).__name__
    return TransportError(f"{what}: {reason}", request_sent=not isinstance(exc, _NOT_SENT))


class AsyncClient(ArtifactCalls):
    """The orchestra SDK for Trio code: typed calls, typed stream events, honest errors.

    ``url`` defaults to ``$ORCHESTRA_URL``, else ``http://127.0.0.1:8080``; ``token`` to
    ``$ORCHESTRA_TOKEN`` (sent as ``Authorization: Bearer``). ``retry`` is off unless
    given (see :class:`Retry`); a dropped stream is always resumed, up to
    ``resume_attempts`` failed reconnections in a row. ``default_model`` is the model (an
    id or alias) of every call that names none (a call's ``model=`` wins); without either,
    the server's default model serves it. Use it as an async context manager, or call
    :meth:`aclose`. ``AsyncClient.embedded(config)`` gives the same API over an
    orchestrator running in this process. The artifact registry's calls
    (``put_artifact()``, ``read_artifact()``, ...) are in :mod:`orchestra.sdk._artifacts`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: Retry | None = None,
        resume_attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        default_model: str | None = None,
    ) -> None:
        self.url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        self.default_model = default_model
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        headers = {"User-Agent": f"orchestra-sdk/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.retry = retry
        self.resume_attempts = resume_attempts
        self._timeout_s = timeout_s
        self._stream_timeout = httpx.Timeout(timeout_s, read=STREAM_IDLE_S)
        self._load_timeout = httpx.Timeout(timeout_s, read=max(timeout_s, LOAD_TIMEOUT_S))
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    @classmethod
    def embedded(
        cls, config: Config | str | os.PathLike[str] | None = None, **options: Any
    ) -> AbstractAsyncContextManager[AsyncClient]:
        """Run the orchestrator in this process (no HTTP listener) and yield a client of it.

        ``config`` is a :class:`~orchestra.config.Config`, a TOML file, or None for the
        embedded default: owned llama-server on the small CPU model that ``orchestra engine
        install`` cached, on a free port; a config with several ``[models]`` works as it
        does for ``orchestra serve``. ``options`` are the constructor's (``default_model``,
        ``retry``, ...). The client is yielded once the engine is ready; leaving the block
        cancels what still runs and stops the engine.
        """
        from orchestra.sdk._embedded import EMBEDDED_URL, open_embedded  # loads the service

        @asynccontextmanager
        async def embedded_client() -> AsyncIterator[AsyncClient]:
            async with open_embedded(config) as (transport, token):
                options.setdefault("token", token)
                async with cls(EMBEDDED_URL, transport=transport, **options) as client:
                    yield client

        return embedded_client()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # -- requests ------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        params: Mapping[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One request; its successful (read) answer, or the mapped error."""
        try:
            response = await self._http.request(
                method,
                path,
                json=body,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if http_timeout is None else http_timeout,
            )
        except httpx.RequestError as exc:
            raise _transport_error(exc, f"{method} {path}") from exc
        if not response.is_success:
            raise error_from_response(response)
        return response

    async def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        params: Mapping[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> tuple[int, Any]:
        """One request; its status and JSON answer, or the mapped error."""
        response = await self._request(method, path, body, params=params, http_timeout=http_timeout)
        try:
            return response.status_code, response.json()
        except ValueError as exc:
            what = f"{method} {path}"
            raise ParseError(f"{what}: the answer is not JSON", response.status_code) from exc

    async def _call(
        self,
        method: str,
        path: str,
        cls: type[T],
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> T:
        """A request, retried as :attr:`retry` allows, its answer structured as ``cls``."""

        async def once() -> T:
            status, data = await self._send(
                method, path, body, params=params, http_timeout=http_timeout
            )
            return structure(data, cls, what=f"{method} {path}", status=status)

        return await self._retrying(once)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, tried again after an error as :attr:`retry` allows."""
        tries = 1
        while True:
            try:
                return await attempt()
            except (ServerError, TransportError) as exc:
                wait = None if self.retry is None else self.retry.wait_s(tries, exc)
                if wait is None:
                    raise
            tries += 1
            await trio.sleep(wait)

    async def capabilities(self) -> Capabilities:
        """What the box can do: API and engine versions, the model, pools, limits, features."""
        return await self._call("GET", "/v1/capabilities", Capabilities)

    async def health(self, pool: str = "default") -> Health:
        """One pool's health."""
        return await self._call("GET", f"/v1/pools/{_quote(pool)}/health", Health)

    async def models(self) -> tuple[CatalogModel, ...]:
        """The models of the catalog, each with its ``residency`` (``loaded``,
        ``loading``, ...), memory, pool, tasks and idle time (``loaded`` is true for those
        loaded now)."""
        return (await self._call("GET", "/v1/models", _ModelList)).data

    async def load_model(self, path_or_id: str) -> CatalogModel:
        """Load a model, waiting (up to :data:`LOAD_TIMEOUT_S` at least) until it is
        loaded; the model as it is then. A path (one with a path separator, or ending with
        ``.gguf``) is registered first in the catalog under its file name without
        ``.gguf`` (again is harmless), with the sha256 of the file as this process reads
        it, and verified by the server (which serves verified catalog models only); see
        :func:`model_file`. Raises :class:`ServerError`: ``NOT_FOUND`` (404) for an
        unknown id, ``MODEL_LOAD_FAILED`` (422) when it did not load, ``MODEL_TOO_LARGE``
        (503) when it cannot fit the memory budget."""
        model_id, path = model_file(path_or_id)
        if path is not None:
            entry: dict[str, Any] = {"id": model_id, "path": path}
            with contextlib.suppress(OSError):  # a server on another box: it hashes alone
                entry["sha256"] = await trio.to_thread.run_sync(_sha256_of, path)
            await self._call("POST", "/v1/catalog/models", CatalogModel, entry)
            verify = f"/v1/catalog/models/{_quote(model_id)}/verify"
            await self._call("POST", verify, CatalogModel, {}, http_timeout=self._load_timeout)
        path_of = f"/v1/models/{_quote(model_id)}/load"
        return await self._call("POST", path_of, CatalogModel, {}, http_timeout=self._load_timeout)

    async def unload_model(self, model_id: str, *, force: bool = False) -> UnloadedModel:
        """Unload a model once its running tasks have ended, or with ``force`` at once,
        cancelling them (``cancelled`` says how many); the model as it is then."""
        return await self._call(
            "POST",
            f"/v1/models/{_quote(model_id)}/unload",
            UnloadedModel,
            {},
            params={"force": "true"} if force else None,
            http_timeout=self._load_timeout,
        )

    async def embed(self, input: str | Sequence[str], *, model: str | None = None) -> Embeddings:
        """Embedding vectors of a text, or of each of several (``POST /v1/embeddings``), in
        their order, from ``model`` (else the client's ``default_model``, else the
        server's default). The model is loaded first if it is not (the call waits)."""
        texts: str | list[str] = input if isinstance(input, str) else list(input)
        body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
        chosen = self._model(model)
        if chosen is not None:
            body["model"] = chosen
        answer = await self._call(
            "POST", EMBEDDINGS_PATH, _EmbeddingList, body, http_timeout=self._load_timeout
        )
        return Embeddings(
            vectors=tuple(item.embedding for item in sorted(answer.data, key=lambda e: e.index)),
            model=answer.model,
            prompt_tokens=answer.usage.prompt_tokens,
        )

    def _model(self, model: str | None) -> str | None:
        """The model a call asks for: its own ``model``, else the client's default."""
        return model if model is not None else self.default_model

    async def submit(self, request: TaskRequest, *, model: str | None = None) -> TaskHandle:
        """Submit a task: its handle (queue position, predicted start), or an error
        (:class:`QueueFull` when the queue is full, :class:`BudgetExceeded` when its
        session's turn cap or a budget is spent). ``model`` (an id or alias) is sent as
        its ``model_ref``, winning over the request's own and the client's
        ``default_model``. With retry on, a task without ``task_id`` is given one, so that
        sending it again is idempotent."""
        model_ref = self._model(model if model is not None else request.model_ref)
        if model_ref != request.model_ref:
            request = attrs.evolve(request, model_ref=model_ref)
        if self.retry is not None and request.task_id is None:
            request = attrs.evolve(request, task_id=uuid.uuid4().hex)
        return await self._call("POST", "/v1/tasks", TaskHandle, request_body(request))

    async def status(self, task_id: str) -> TaskStatus:
        """A snapshot of a task: state, queue position and predicted start, tokens so far."""
        return await self._call("GET", f"/v1/tasks/{_quote(task_id)}", TaskStatus)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task (idempotent). Once this returns, no token of it is sent again."""
        return await self._call("POST", f"/v1/tasks/{_quote(task_id)}/cancel", CancelResult)

    async def session(self, session_id: str) -> SessionStatus:
        """A snapshot of a session: its slot, turns, what it has used and has left."""
        return await self._call("GET", f"/v1/sessions/{_quote(session_id)}", SessionStatus)

    async def delete_session(self, session_id: str) -> DeletedSession:
        """End a session: its task in progress is cancelled and its slot's cache erased
        (``kv_erased``); the answer is the session as it was."""
        path = f"/v1/sessions/{_quote(session_id)}"
        return await self._call("DELETE", path, DeletedSession)

    async def list_tasks(
        self,
        *,
        state: str | Sequence[str] | None = None,
        pool: str | None = None,
        limit: int | None = None,
    ) -> tuple[TaskSummary, ...]:
        """The tasks every pool knows (``GET /v1/tasks``), no prompt and no text: the
        running ones (in dispatch order), then the waiting ones (soonest predicted start
        first), then those that ended and are still known (the latest first). ``state``
        is a state or several (a :class:`~orchestra.task.TaskState` is one; default:
        running and queued), ``pool`` keeps one pool's tasks, ``limit`` (1 to 1000,
        server default 100) bounds the list. Raises :class:`ServerError`:
        ``INVALID_PARAMS`` (400) for an unknown state or a bad limit, ``NOT_FOUND`` (404)
        for an unknown pool."""
        params: dict[str, str] = {}
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            params["state"] = ",".join(str(s) for s in states)
        if pool is not None:
            params["pool"] = pool
        if limit is not None:
            params["limit"] = str(limit)
        answer = await self._call("GET", "/v1/tasks", _TaskList, params=params or None)
        return answer.tasks

    async def replica_sets(self) -> tuple[ReplicaSet, ...]:
        """Each pool's replicas (``GET /v1/replicasets``): their state, slots and service
        level, and the tokens the pool sent (``tokens_out_total``)."""
        return (await self._call("GET", "/v1/replicasets", _ReplicaSets)).replicasets

    async def drain(self, pool: str = "default", *, deadline_ms: int | None = None) -> DrainResult:
        """Drain a pool (``POST /v1/pools/{pool}/drain``): from now on a submission to it
        is refused (503 ``POOL_UNREADY``) and nothing is dispatched; running tasks get
        ``deadline_ms`` (server default 30 s, at most an hour) to end, then those that
        sent tokens are cancelled and the others requeued. Waiting tasks keep their place
        until :meth:`resume`. Answers once the drain is complete (the read timeout is
        raised to cover the deadline). Raises :class:`ServerError`: ``NOT_FOUND`` (404),
        ``CONFLICT`` (409: another drain or reload of the pool is under way)."""
        body: dict[str, Any] = {} if deadline_ms is None else {"deadline_ms": deadline_ms}
        wait_s = (DRAIN_DEADLINE_MS if deadline_ms is None else max(0, deadline_ms)) / 1000
        return await self._call(
            "POST",
            f"/v1/pools/{_quote(pool)}/drain",
            DrainResult,
            body,
            http_timeout=httpx.Timeout(self._timeout_s, read=self._timeout_s + wait_s),
        )

    async def resume(self, pool: str = "default") -> ResumeResult:
        """End a drain (``POST /v1/pools/{pool}/resume``): the pool takes and dispatches
        tasks again; the pool's state then. Resuming a pool that is not drained changes
        nothing."""
        return await self._call("POST", f"/v1/pools/{_quote(pool)}/resume", ResumeResult, {})

    # -- streams -------------------------------------------------------------------------

    def stream(
        self, task_id: str, *, last_event_id: int | None = None
    ) -> AbstractAsyncContextManager[trio.abc.ReceiveChannel[Event]]:
        """A task's events, in order, each once: ``started``, ``token`` ..., then ``end`` or
        ``error``, after which the channel ends::

            async with client.stream(handle.task_id) as events:
                async for event in events:
                    ...

        A stream that drops (or stays silent past the keep-alives) is resumed with
        ``Last-Event-ID``, so no event is lost or repeated; after ``resume_attempts``
        failed reconnections in a row it raises :class:`TransportError`. Events after
        ``last_event_id`` only, when given. Leaving the block early closes the stream (the
        task goes on; cancel it with :meth:`cancel`).
        """
        return self._events(task_id, -1 if last_event_id is None else last_event_id)

    @trio.as_safe_channel
    async def _events(self, task_id: str, last: int) -> AsyncGenerator[Event, None]:
        path = f"/v1/tasks/{_quote(task_id)}/stream"
        drops = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last >= 0:
                headers["Last-Event-ID"] = str(last)
            terminal: End | Error | None = None
            reason = "it ended before its end or error event"
            try:
                async with self._http.stream(
                    "GET", path, headers=headers, timeout=self._stream_timeout
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise error_from_response(response)
                    decoder = SSEDecoder()
                    body = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
                    async with contextlib.aclosing(body) as chunks:
                        async for chunk in chunks:
                            if terminal is not None:
                                continue  # read the body to its end: the server closes it
                            for raw in decoder.feed(chunk):
                                event = _typed(task_id, raw)
                                if event is None or event.id <= last:
                                    continue  # unknown kind, or delivered before a resume
                                last, drops = event.id, 0
                                if isinstance(event, End | Error):
                                    terminal = event
                                    break
                                yield event
            except httpx.RequestError as exc:
                reason = str(exc) or type(exc).__name__
            if terminal is not None:
                yield terminal  # even if the connection broke after it: nothing is missing
                return
            drops += 1
            if drops > self.resume_attempts:
                raise TransportError(
                    f"stream of task {task_id}: dropped {drops} times in a row ({reason})"
                )
            await trio.sleep(min(0.05 * 2**drops, 2.0))

    async def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> Completion:
        """Submit a task and wait for its whole text (``params`` are :class:`TaskRequest`
        fields; ``model`` as for :meth:`submit`). Raises :class:`TaskFailed` when its
        stream ends with an error. Cancelling this call cancels the task on the server."""
        began = time.perf_counter()
        handle = await self.submit(TaskRequest(prompt=prompt, **params), model=model)
        return await self._collect(handle, began)

    async def _collect(self, handle: TaskHandle, began: float) -> Completion:
        pieces: list[str] = []
        queue_wait_ms = 0
        over = False
        try:
            async with self.stream(handle.task_id) as events:
                async for event in events:
                    if isinstance(event, Token):
                        pieces.append(event.text)
                    elif isinstance(event, Started):
                        queue_wait_ms = event.queue_wait_ms
                    elif isinstance(event, End):
                        over = True
                        return Completion(
                            task_id=handle.task_id,
                            text="".join(pieces),
                            tokens_out=event.tokens_out,
                            queue_wait_ms=queue_wait_ms,
                            decode_time_ms=event.decode_time_ms,
                            total_ms=(time.perf_counter() - began) * 1000,
                            artifact_id=event.artifact_id,
                            artifact_error=event.artifact_error,
                        )
                    elif isinstance(event, Error):
                        over = True
                        raise TaskFailed(
                            code=event.code,
                            message=event.message or str(event.code),
                            retriable=event.retriable,
                            retry_after_ms=event.retry_after_ms,
                            task_id=handle.task_id,
                            text="".join(pieces),
                        )
            raise AssertionError("a stream ends with end or error")  # _events guarantees it
        finally:
            if not over:
                await self._cancel_abandoned(handle.task_id)

    # -- the OpenAI face -----------------------------------------------------------------

    def stream_chat(
        self, messages: Sequence[Message], *, model: str | None = None, **params: Any
    ) -> ChatStream:
        """A chat answer as it is generated, through the OpenAI face
        (``POST /v1/chat/completions``); ``model`` (an id or alias) wins over the client's
        ``default_model`` (without either, ``default``: the server's default model);
        ``params`` are :class:`ChatRequest` fields (OpenAI's, and orchestra's
        ``priority``, ``deadline_ms``, ``session_id``, ``determinism``, ``task_id``)::

            async with client.stream_chat(messages, max_tokens=64) as stream:
                stream.task_id                   # the task, as soon as the answer began
                async for delta in stream:       # ChatDelta: content, tool-call pieces,
                    print(delta.content, end="") # then finish_reason and usage
            messages.append(stream.completion().message)

        Entering the block sends the request: a refusal raises there (the SDK's typed
        errors, mapped from the OpenAI error's ``code``). Leaving it early (a ``break``, an
        exception, a Trio cancel) closes the HTTP stream, which makes the server cancel
        the task at once; without the block, close it with ``contextlib.aclosing``. A task
        that fails or is cancelled mid-answer raises :class:`TaskFailed`.
        """
        chosen = self._model(model)
        if chosen is not None:
            params["model"] = chosen
        request = ChatRequest(messages=messages, **params)
        if self.retry is not None and request.task_id is None:
            request = attrs.evolve(request, task_id=uuid.uuid4().hex)
        body = chat_body(request)
        return ChatStream(lambda: self._retrying(lambda: self._send_chat(body)))

    async def chat(
        self, messages: Sequence[Message], *, model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """A whole chat answer (``model`` and ``params`` as for :meth:`stream_chat`). It is
        read as a stream, so a long wait in the queue is never cut by a read timeout;
        cancelling this call cancels the task on the server. Raises :class:`TaskFailed`
        when the task fails or is cancelled."""
        async with self.stream_chat(messages, model=model, **params) as stream:
            return await stream.collect()

    async def _send_chat(self, body: Mapping[str, Any]) -> httpx.Response:
        """Send a chat request; its answer, streamed and not yet read, or the mapped error."""
        what = f"POST {CHAT_PATH}"
        request = self._http.build_request(
            "POST",
            CHAT_PATH,
            json=body,
            headers={"Accept": "text/event-stream"},
            timeout=self._stream_timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.RequestError as exc:
            raise _transport_error(exc, what) from exc
        if response.is_success:
            return response
        try:
            await response.aread()
        except httpx.RequestError as exc:
            raise _transport_error(exc, what) from exc
        finally:
            await response.aclose()
        raise error_from_response(response)

    async def _cancel_abandoned(self, task_id: str) -> None:
        with trio.move_on_after(CANCEL_ON_ABANDON_S, shield=True):
            # the server being gone, or having forgotten the task, leaves nothing to cancel
            with contextlib.suppress(OrchestraError):
                await self.cancel(task_id)


def _typed(task_id: str, raw: RawEvent) -> Event | None:
    """The typed event of one SSE frame (None for a kind this SDK does not know)."""
    if raw.id is None or not raw.id.isdigit():
        raise ParseError(f"stream of task {task_id}: an event without a numeric id: {raw}")
    try:
        data = json.loads(raw.data)
    except ValueError as exc:
        raise ParseError(f"stream of task {task_id}: event data is not JSON: {raw}") from exc
    return event_from_wire(int(raw.id), raw.event, data)
