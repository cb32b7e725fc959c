"""``Client``: the same SDK for ordinary (blocking) Python code.

A ``Client`` runs an :class:`AsyncClient` in a Trio event loop on a background thread of
its own (a *portal*) and forwards every call there, so both faces share one
implementation: the same errors, retries, resumes and embedded mode. Ctrl-C while a call
waits interrupts it (``KeyboardInterrupt``) and cancels the call in the loop, which for
``complete()`` also cancels the task on the server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from orchestra.sdk._artifacts import Artifact, ArtifactPage, Lineage
from orchestra.sdk._async import AsyncClient
from orchestra.sdk._chat import ChatCompletion, ChatDelta, Message
from orchestra.sdk._events import Event
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
from orchestra.sdk._openai import ChatStream

if TYPE_CHECKING:
    from orchestra.config import Config

T = TypeVar("T")
_ABANDON_WAIT_S = 6.0
"""After Ctrl-C, how long the caller waits for the cancelled call to clean up (the
server-side cancel of ``complete()`` takes at most 5 s)."""


@attrs.frozen
class _Failed:
    """An exception a stream pump passes to the thread that reads the stream."""

    error: BaseException


class _Portal:
    """A Trio loop on a daemon thread that owns one :class:`AsyncClient` and runs calls
    on it for other threads. Start-up errors (an embedded engine that does not start) are
    raised by the constructor."""

    def __init__(self, open_client: Callable[[], AbstractAsyncContextManager[AsyncClient]]):
        self._open_client = open_client
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._client: AsyncClient | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._closing: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=self._main, name="orchestra-sdk", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with self._open_client() as client, trio.open_nursery() as nursery:
            self._client, self._nursery = client, nursery
            self._token = trio.lowlevel.current_trio_token()
            self._closing = trio.Event()
            self._ready.set()
            await self._closing.wait()
            nursery.cancel_scope.cancel()

    @property
    def client(self) -> AsyncClient:
        assert self._client is not None
        return self._client

    def call(self, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run ``fn(client)`` in the loop and return its result (or raise its error)."""
        scope = trio.CancelScope()
        done = threading.Event()

        async def run() -> T:
            try:
                with scope:
                    return await fn(self.client)
                raise KeyboardInterrupt  # cancelled because the caller was interrupted
            finally:
                done.set()

        try:
            return trio.from_thread.run(run, trio_token=self._token)
        except KeyboardInterrupt:
            if not done.is_set():
                trio.from_thread.run_sync(scope.cancel, trio_token=self._token)
                done.wait(_ABANDON_WAIT_S)
            raise

    def run_sync(self, fn: Callable[[], T]) -> T:
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def start_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        assert self._nursery is not None
        nursery = self._nursery
        self.run_sync(lambda: nursery.start_soon(fn))

    def close(self) -> None:
        if self._closing is not None and self._thread.is_alive():
            closing = self._closing
            self.run_sync(closing.set)
        self._thread.join()
        if self._failure is not None:
            raise self._failure


class SyncChatStream:
    """:class:`ChatStream` for blocking code: ``Client.stream_chat()``'s answer::

        with client.stream_chat(messages) as stream:
            print(stream.task_id)
            for delta in stream:
                print(delta.content, end="")
        answer = stream.completion()

    Entering the block sends the request; leaving it (or :meth:`close`) closes the HTTP
    stream, which makes the server cancel the task if it has not ended. Ctrl-C while it
    waits for the next piece raises ``KeyboardInterrupt`` in the caller; the block then
    closes the stream.
    """

    def __init__(self, portal: _Portal, stream: ChatStream) -> None:
        self._portal = portal
        self._stream = stream

    @property
    def task_id(self) -> str:
        """The orchestra task of this answer (``X-Task-Id``), once the answer began."""
        return self._stream.task_id

    @property
    def correlation_id(self) -> str | None:
        return self._stream.correlation_id

    @property
    def text(self) -> str:
        """The text received so far."""
        return self._stream.text

    @property
    def done(self) -> bool:
        """True once the whole answer was received."""
        return self._stream.done

    def open(self) -> SyncChatStream:
        """Send the request and wait for the answer to begin (idempotent)."""
        self._portal.call(lambda _: self._stream.open())
        return self

    def close(self) -> None:
        """Close the HTTP stream; the server cancels the task if it has not ended."""
        self._portal.call(lambda _: self._stream.aclose())

    def __enter__(self) -> SyncChatStream:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> SyncChatStream:
        return self

    def __next__(self) -> ChatDelta:
        try:
            return self._portal.call(lambda _: self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def collect(self) -> ChatCompletion:
        """Read the rest of the stream; the whole answer."""
        return self._portal.call(lambda _: self._stream.collect())

    def completion(self) -> ChatCompletion:
        """The whole answer; only once the stream has ended (else ``RuntimeError``)."""
        return self._stream.completion()


class Client:
    """The orchestra SDK for blocking code; every method is :class:`AsyncClient`'s.

    ``Client(url)`` talks to a server; ``Client.embedded(config)`` runs the orchestrator in
    this process. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        """A client of the server at ``url``; ``options`` are :class:`AsyncClient`'s
        (``token``, ``timeout_s``, ``retry``, ``resume_attempts``, ``transport``,
        ``default_model``)."""
        self._portal = _Portal(lambda: AsyncClient(url, **options))

    @classmethod
    def embedded(
        cls, config: Config | str | os.PathLike[str] | None = None, **options: Any
    ) -> Client:
        """Start the orchestrator in this process (see :meth:`AsyncClient.embedded`) and
        return a client of it, once its engine is ready. :meth:`close` stops it."""
        client = cls.__new__(cls)
        client._portal = _Portal(lambda: AsyncClient.embedded(config, **options))
        return client

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (and stop an embedded orchestrator)."""
        self._portal.close()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._portal.client.url

    @property
    def default_model(self) -> str | None:
        """The model of every call that names none (see :class:`AsyncClient`)."""
        return self._portal.client.default_model

    @default_model.setter
    def default_model(self, model: str | None) -> None:
        self._portal.client.default_model = model

    def capabilities(self) -> Capabilities:
        """What the box can do (see :meth:`AsyncClient.capabilities`)."""
        return self._portal.call(lambda c: c.capabilities())

    def health(self, pool: str = "default") -> Health:
        """One pool's health."""
        return self._portal.call(lambda c: c.health(pool))

    def models(self) -> tuple[CatalogModel, ...]:
        """The models of the catalog and their residency (see :meth:`AsyncClient.models`)."""
        return self._portal.call(lambda c: c.models())

    def load_model(self, path_or_id: str) -> CatalogModel:
        """Load a model by id, or register a file and load it (see
        :meth:`AsyncClient.load_model`); Ctrl-C stops waiting."""
        return self._portal.call(lambda c: c.load_model(path_or_id))

    def unload_model(self, model_id: str, *, force: bool = False) -> UnloadedModel:
        """Unload a model (see :meth:`AsyncClient.unload_model`)."""
        return self._portal.call(lambda c: c.unload_model(model_id, force=force))

    def embed(self, input: str | Sequence[str], *, model: str | None = None) -> Embeddings:
        """Embedding vectors of a text or of several (see :meth:`AsyncClient.embed`)."""
        return self._portal.call(lambda c: c.embed(input, model=model))

    def submit(self, request: TaskRequest, *, model: str | None = None) -> TaskHandle:
        """Submit a task (see :meth:`AsyncClient.submit`)."""
        return self._portal.call(lambda c: c.submit(request, model=model))

    def status(self, task_id: str) -> TaskStatus:
        """A snapshot of a task."""
        return self._portal.call(lambda c: c.status(task_id))

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task (idempotent)."""
        return self._portal.call(lambda c: c.cancel(task_id))

    def list_tasks(
        self,
        *,
        state: str | Sequence[str] | None = None,
        pool: str | None = None,
        limit: int | None = None,
    ) -> tuple[TaskSummary, ...]:
        """The tasks every pool knows (see :meth:`AsyncClient.list_tasks`)."""
        return self._portal.call(lambda c: c.list_tasks(state=state, pool=pool, limit=limit))

    def replica_sets(self) -> tuple[ReplicaSet, ...]:
        """Each pool's replicas and the tokens it sent (see :meth:`AsyncClient.replica_sets`)."""
        return self._portal.call(lambda c: c.replica_sets())

    def drain(self, pool: str = "default", *, deadline_ms: int | None = None) -> DrainResult:
        """Drain a pool, once its running tasks ended or the deadline passed (see
        :meth:`AsyncClient.drain`)."""
        return self._portal.call(lambda c: c.drain(pool, deadline_ms=deadline_ms))

    def resume(self, pool: str = "default") -> ResumeResult:
        """End a drain (see :meth:`AsyncClient.resume`)."""
        return self._portal.call(lambda c: c.resume(pool))

    def session(self, session_id: str) -> SessionStatus:
        """A snapshot of a session."""
        return self._portal.call(lambda c: c.session(session_id))

    def delete_session(self, session_id: str) -> DeletedSession:
        """End a session (see :meth:`AsyncClient.delete_session`)."""
        return self._portal.call(lambda c: c.delete_session(session_id))

    def put_artifact(
        self,
        content: str | bytes,
        *,
        kind: str,
        media_type: str | None = None,
        tags: Sequence[str] = (),
        parents: Sequence[str] = (),
        session_id: str | None = None,
        task_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Keep content as an artifact (see :meth:`AsyncClient.put_artifact`)."""
        return self._portal.call(
            lambda c: c.put_artifact(
                content,
                kind=kind,
                media_type=media_type,
                tags=tags,
                parents=parents,
                session_id=session_id,
                task_id=task_id,
                meta=meta,
            )
        )

    def get_artifact(self, artifact_id: str) -> Artifact:
        """An artifact's metadata."""
        return self._portal.call(lambda c: c.get_artifact(artifact_id))

    def read_artifact(self, artifact_id: str) -> bytes:
        """An artifact's content (see :meth:`AsyncClient.read_artifact`)."""
        return self._portal.call(lambda c: c.read_artifact(artifact_id))

    def list_artifacts(
        self,
        *,
        kind: str | None = None,
        tag: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        parent: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ArtifactPage:
        """One page of the artifacts (see :meth:`AsyncClient.list_artifacts`)."""
        return self._portal.call(
            lambda c: c.list_artifacts(
                kind=kind,
                tag=tag,
                session_id=session_id,
                task_id=task_id,
                parent=parent,
                limit=limit,
                cursor=cursor,
            )
        )

    def lineage(self, artifact_id: str) -> Lineage:
        """What an artifact was made from and what was made from it."""
        return self._portal.call(lambda c: c.lineage(artifact_id))

    def tag_artifact(
        self, artifact_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Artifact:
        """Add and remove an artifact's tags."""
        return self._portal.call(lambda c: c.tag_artifact(artifact_id, add=add, remove=remove))

    def delete_artifact(self, artifact_id: str, *, cascade: bool = False) -> tuple[str, ...]:
        """Delete an artifact (see :meth:`AsyncClient.delete_artifact`); the ids deleted."""
        return self._portal.call(lambda c: c.delete_artifact(artifact_id, cascade=cascade))

    def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> Completion:
        """Submit a task and wait for its whole text (see :meth:`AsyncClient.complete`);
        Ctrl-C while it waits cancels the task on the server."""
        return self._portal.call(lambda c: c.complete(prompt, model=model, **params))

    def chat(
        self, messages: Sequence[Message], *, model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """A whole chat answer (see :meth:`AsyncClient.chat`); Ctrl-C while it waits
        cancels the task on the server."""
        return self._portal.call(lambda c: c.chat(messages, model=model, **params))

    def stream_chat(
        self, messages: Sequence[Message], *, model: str | None = None, **params: Any
    ) -> SyncChatStream:
        """A chat answer as it is generated (see :meth:`AsyncClient.stream_chat` and
        :class:`SyncChatStream`)."""
        stream = self._portal.client.stream_chat(messages, model=model, **params)
        return SyncChatStream(self._portal, stream)

    @contextmanager
    def stream(
        self, task_id: str, *, last_event_id: int | None = None
    ) -> Iterator[Iterator[Event]]:
        """A task's events (see :meth:`AsyncClient.stream`)::

        with client.stream(handle.task_id) as events:
            for event in events:
                ...
        """
        send, receive = trio.open_memory_channel[Event | _Failed](0)
        scope = trio.CancelScope()

        async def pump() -> None:
            with scope, send:
                try:
                    async with self._portal.client.stream(
                        task_id, last_event_id=last_event_id
                    ) as events:
                        async for event in events:
                            await send.send(event)
                except Exception as exc:
                    await send.send(_Failed(exc))

        def events() -> Iterator[Event]:
            while True:
                try:
                    item = self._portal.call(lambda _: receive.receive())
                except trio.EndOfChannel:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item

        self._portal.start_soon(pump)
        try:
            yield events()
        finally:
            self._portal.run_sync(scope.cancel)
            self._portal.run_sync(receive.close)
