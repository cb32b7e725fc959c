""":class:`FakeLlamaServer`: the fake engine's state and knobs, its HTTP routes, and the
generation of completions on its slots, served as a raw ASGI 3 app by hypercorn.

``/completion``, ``/v1/completions`` and ``/v1/chat/completions`` share the slots, the
generated words, the fault directives and cancel-on-disconnect; each request's
:class:`~.completion.Face` writes the tokens in its endpoint's format.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from .asgi import (
    Abort,
    Receive,
    Response,
    Scope,
    Send,
    authorized,
    dumps,
    error_body,
    lifespan,
    read_json,
    respond,
)
from .chat import accept_chat
from .completion import Face, Job, NativeFace, abort, accept, send_final, send_mid_error, timings
from .embeddings import OFF_MESSAGE, EmbeddingJob, accept_embeddings
from .slots import SlotTable, Waiter
from .template import ChatRequestError, render
from .text import accept_text_completion
from .words import generated_word, tokenize


def _dispatch_on_resize(server: FakeLlamaServer, _: attrs.Attribute[int], value: int) -> int:
    server._dispatch(value)
    return value


@attrs.define
class FakeLlamaServer(SlotTable):
    """A fake llama-server, served as a raw ASGI 3 app by :meth:`serve`.

    The knobs (``total_slots``, ``token_delay_s``, ``n_ctx``, ``model_path``) may be changed
    by a test at any time; raising ``total_slots`` hands free slots to waiting requests at
    once. ``n_ctx`` is the server's whole context (``-c``), split evenly across the slots as
    without a unified KV cache: a request's prompt tokens plus ``n_predict`` must fit in
    ``n_ctx // total_slots``.

    The counters are for tests to observe; :meth:`wait_until` waits on them without polling.
    """

    total_slots: int = attrs.field(default=1, on_setattr=_dispatch_on_resize)
    """Parallel generation slots (``-np``)."""
    token_delay_s: float = 0.0
    """Seconds slept before each generated token."""
    n_ctx: int = 2048
    """The whole context size (``-c``); each slot gets ``n_ctx // total_slots``."""
    model_path: str = "models/fake.gguf"
    """Reported in ``/props`` and in final frames as ``model``."""
    slot_actions: bool = True
    """Whether ``POST /slots/N?action=erase`` works (llama-server's ``--slot-save-path``)."""
    api_key: str = ""
    """``--api-key``: when set (keys separated by commas), every route but ``/health``
    wants ``Authorization: Bearer KEY`` (or ``X-Api-Key: KEY``), else 401."""
    embeddings: bool = False
    """``--embeddings``: whether ``POST /v1/embeddings`` works (else 501
    ``not_supported_error``, whatever the body)."""

    disconnects: int = attrs.field(default=0, init=False)
    """Completion (and embedding) requests whose client went away before their response
    ended."""
    completions_started: int = attrs.field(default=0, init=False)
    """Completions that got a slot and began generating."""
    completions_finished: int = attrs.field(default=0, init=False)
    """Completions that generated to their end: counted, with the slot freed, just before
    the last message (final frame, or ``error-mid`` error) is sent; drops and disconnects
    are not counted."""
    deferred: int = attrs.field(default=0, init=False)
    """Requests waiting for a free slot right now."""
    completion_bodies: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    """Every JSON object body received on ``/completion``, in arrival order."""
    completion_headers: list[dict[str, str]] = attrs.field(factory=list, init=False)
    """The request headers (names lower-cased) of each ``/completion`` request."""
    v1_completion_bodies: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    """Every JSON object body received on ``/v1/completions``, in arrival order."""
    chat_bodies: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    """Every JSON object body received on ``/v1/chat/completions``, in arrival order."""
    embedding_bodies: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    """Every JSON object body received on ``/v1/embeddings`` (with embeddings on)."""
    embeddings_served: int = attrs.field(default=0, init=False)
    """Embedding requests answered 200: counted, with the slot freed, just before the
    answer is sent."""

    _loading: bool = attrs.field(default=False, init=False)
    _slot_tasks: dict[int, int] = attrs.field(factory=dict, init=False)
    _next_task: int = attrs.field(default=0, init=False)
    _waiters: deque[Waiter] = attrs.field(factory=deque, init=False)
    _slot_cache: dict[int, list[int]] = attrs.field(factory=dict, init=False)
    """Per slot, the tokens of its last prompt and output (its KV cache)."""
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)

    # -- state observed by tests -----------------------------------------------------------

    @property
    def busy_slots(self) -> int:
        """Slots generating right now."""
        return len(self._slot_tasks)

    @property
    def loading(self) -> bool:
        """Whether the fake pretends to be loading its model."""
        return self._loading

    def set_loading(self, loading: bool) -> None:
        """While loading, every route answers 503 ``Loading model``."""
        self._loading = loading
        self._notify()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checking it whenever the fake's state changes.

        The predicate should read the fake's state (counters, slots, bodies); a change
        elsewhere does not wake the wait. Wrap it in ``trio.fail_after`` to bound it.
        """
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- serving ---------------------------------------------------------------------------

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve over HTTP/1.1 with hypercorn until cancelled.

        Reports the base URL (``http://127.0.0.1:PORT``, the real port when ``port`` is 0)
        through ``task_status``: ``url = await nursery.start(fake.serve)``.
        """
        config = hypercorn.config.Config()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 30.0
        # hypercorn types ASGI messages as TypedDicts; this app reads them as plain mappings.
        app: Any = self
        async with trio.open_nursery() as nursery:
            urls: list[str] = await nursery.start(partial(hypercorn.trio.serve, app, config))
            task_status.started(urls[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self._loading:
            await read_json(receive)  # drained, so that the connection can be reused
            await respond(send, 503, error_body(503, "Loading model"))
            return
        if path not in ("/health", "/v1/health") and not authorized(scope, self.api_key):
            await read_json(receive)
            await respond(send, 401, error_body(401, "Invalid API Key", "authentication_error"))
            return
        if path in ("/health", "/v1/health") and method == "GET":
            await respond(send, 200, b'{"status":"ok"}')
        elif path == "/props" and method == "GET":
            await respond(send, 200, dumps(self._props()))
        elif path in ("/v1/models", "/models") and method == "GET":
            await respond(send, 200, dumps(self._models()))
        elif path == "/slots" and method == "GET":
            await self._slots(scope, send)
        elif path == "/metrics" and method == "GET":
            await respond(send, 200, self._metrics(), b"text/plain; version=0.0.4")
        elif path == "/tokenize" and method == "POST":
            await self._tokenize(receive, send)
        elif path.startswith("/slots/") and method == "POST":
            await self._slot_action(scope, receive, send)
        elif path in ("/completion", "/completions") and method == "POST":
            await self._completion(scope, receive, send)
        elif path == "/v1/completions" and method == "POST":
            await self._v1_completion(receive, send)
        elif path in ("/v1/chat/completions", "/chat/completions") and method == "POST":
            await self._chat(receive, send)
        elif path == "/apply-template" and method == "POST":
            await self._apply_template(receive, send)
        elif path == "/v1/embeddings" and method == "POST":
            await self._embeddings(receive, send)
        else:
            await read_json(receive)
            await respond(send, 404, error_body(404, "File Not Found"))

    # -- simple routes ---------------------------------------------------------------------

    @property
    def _slot_ctx(self) -> int:
        return self.n_ctx // max(self.total_slots, 1)

    def _props(self) -> dict[str, Any]:
        return {
            "default_generation_settings": {"n_ctx": self._slot_ctx, "params": {}},
            "total_slots": self.total_slots,
            "model_alias": self.model_path,
            "model_path": self.model_path,
            "modalities": {"vision": False, "audio": False},
            "endpoint_slots": True,
            "endpoint_props": False,
            "endpoint_metrics": True,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "build_info": "b0-unknown",
            "is_sleeping": False,
        }

    def _models(self) -> dict[str, Any]:
        """``/v1/models``: the one model, named by its path, as the engine lists it."""
        model = {
            "id": self.model_path,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "llamacpp",
            "meta": {"n_ctx": self.n_ctx},
        }
        return {"object": "list", "data": [model]}

    async def _slots(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        fail_on_no_slot = query.get("fail_on_no_slot", ["0"])[0] not in ("", "0", "false")
        if fail_on_no_slot and self._free_slot(self.total_slots) is None:
            await respond(send, 503, error_body(503, "no slot available"))
            return
        slots = [
            {
                "id": i,
                "n_ctx": self._slot_ctx,
                "is_processing": i in self._slot_tasks,
                "id_task": self._slot_tasks.get(i, -1),
            }
            for i in range(self.total_slots)
        ]
        await respond(send, 200, dumps(slots))

    async def _slot_action(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_json(receive)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        action = query.get("action", [""])[0]
        if not self.slot_actions:
            message = "This server does not support slots action. Start it with `--slot-save-path`"
            await respond(send, 501, error_body(501, message, "not_supported_error"))
            return
        try:
            slot = int(scope["path"].removeprefix("/slots/"))
        except ValueError:
            slot = -1
        if action != "erase" or not 0 <= slot < self.total_slots:
            await respond(send, 400, error_body(400, "Invalid slot action or id"))
            return
        erased = len(self._slot_cache.pop(slot, []))
        await respond(send, 200, dumps({"id_slot": slot, "n_erased": erased}))

    def _metrics(self) -> bytes:
        lines = [
            "# TYPE llamacpp:requests_processing gauge",
            f"llamacpp:requests_processing {self.busy_slots}",
            "# TYPE llamacpp:requests_deferred gauge",
            f"llamacpp:requests_deferred {self.deferred}",
        ]
        return ("\n".join(lines) + "\n").encode()

    async def _tokenize(self, receive: Receive, send: Send) -> None:
        body = await read_json(receive)
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            message = '"content" must be provided' if isinstance(body, dict) else "Invalid JSON"
            await respond(send, 400, error_body(400, message))
            return
        tokens = tokenize(body["content"], body.get("add_special") is True)
        await respond(send, 200, dumps({"tokens": tokens}))

    async def _apply_template(self, receive: Receive, send: Send) -> None:
        try:
            prompt = render(await read_json(receive))
        except ChatRequestError as error:
            await respond(send, error.status, error_body(error.status, error.message))
            return
        await respond(send, 200, dumps({"prompt": prompt}))

    # -- embeddings ------------------------------------------------------------------------

    async def _embeddings(self, receive: Receive, send: Send) -> None:
        body = await read_json(receive)
        if not self.embeddings:
            await respond(send, 501, error_body(501, OFF_MESSAGE, "not_supported_error"))
            return
        if isinstance(body, dict):
            self.embedding_bodies.append(body)
            self._notify()
        job = accept_embeddings(body, self.model_path)
        if isinstance(job, tuple):
            await respond(send, *job)
            return
        await self._embed(job, receive, send)

    async def _embed(self, job: EmbeddingJob, receive: Receive, send: Send) -> None:
        """Embed ``job`` on a slot (all its prompts on one), unless its client leaves."""
        computing = trio.CancelScope()
        response = Response(send, computing)
        slot: int | None = None

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            response.client_left()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect)
                answer = b""
                with computing:
                    slot = await self._take_slot(completion=False)
                    if job.hang:
                        await trio.sleep_forever()
                    answer = job.answer()
                if slot is not None:
                    self._release(slot)
                    slot = None
                if response.gone:
                    self.disconnects += 1
                else:
                    self.embeddings_served += 1
                self._notify()
                if not response.gone:
                    await response.whole(200, answer)
                nursery.cancel_scope.cancel()
        finally:
            if slot is not None:  # cancelled from outside (the server is stopping)
                self._release(slot)
                self._notify()

    # -- completions -----------------------------------------------------------------------

    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_json(receive)
        if isinstance(body, dict):
            self.completion_bodies.append(body)
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            self.completion_headers.append(headers)
            self._notify()
        job = accept(body, self._slot_ctx)
        if isinstance(job, tuple):
            await respond(send, *job)
            return
        await self._run(job, NativeFace(job, self.model_path), receive, send)

    async def _v1_completion(self, receive: Receive, send: Send) -> None:
        body = await read_json(receive)
        if isinstance(body, dict):
            self.v1_completion_bodies.append(body)
            self._notify()
        accepted = accept_text_completion(body, self._slot_ctx, self.model_path)
        if isinstance(accepted[0], int):
            await respond(send, accepted[0], accepted[1])
            return
        job, face = accepted
        await self._run(job, face, receive, send)

    async def _chat(self, receive: Receive, send: Send) -> None:
        body = await read_json(receive)
        if isinstance(body, dict):
            self.chat_bodies.append(body)
            self._notify()
        accepted = accept_chat(body, self._slot_ctx, self.model_path)
        if isinstance(accepted[0], int):
            await respond(send, accepted[0], accepted[1])
            return
        job, face = accepted
        await self._run(job, face, receive, send)

    async def _run(self, job: Job, face: Face, receive: Receive, send: Send) -> None:
        """Generate ``job`` on a slot, its tokens written by ``face``, until its end or its
        client leaving."""
        generation = trio.CancelScope()
        response = Response(send, generation)
        slot: int | None = None
        ending: Callable[[], Awaitable[None]] | None = None

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            response.client_left()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect)
                with generation:
                    slot = await self._take_slot(job.id_slot)
                    ending = await self._generate(job, face, slot, response)
                # Free the slot and count the outcome before the last message goes out (as
                # the engine does), so a client that saw its response end sees them updated.
                if slot is not None:
                    self._release(slot)
                    slot = None
                if response.gone:
                    self.disconnects += 1
                elif not response.aborted:
                    self.completions_finished += 1
                self._notify()
                # The end is sent outside ``generation``, which only a leaving client cancels.
                if ending is not None and not response.gone:
                    await ending()
                    if response.gone:  # the last send failed
                        self.disconnects += 1
                        self._notify()
                nursery.cancel_scope.cancel()
        finally:
            if slot is not None:  # cancelled from outside (the server is stopping)
                self._release(slot)
                self._notify()
        if response.aborted:
            raise Abort("[[drop]] directive: cutting the connection")

    async def _generate(
        self, job: Job, face: Face, slot: int, response: Response
    ) -> Callable[[], Awaitable[None]]:
        """Produce the tokens (streaming them); return what sends the end of the response."""
        if job.stream:
            await response.start(
                200, (b"content-type", b"text/event-stream"), (b"x-accel-buffering", b"no")
            )
        started = time.perf_counter()
        every = job.directives.get("empty", 0)
        while not face.done:
            i = face.n_decoded
            if job.directives.get("error-mid") == i:
                return partial(send_mid_error, job, response)
            if job.directives.get("drop") == i:
                response.aborted = True
                return partial(abort, job, response)
            if job.directives.get("hang") == i:
                await trio.sleep_forever()
            await trio.sleep(self.token_delay_s)
            word = generated_word(job.prompt, job.seed, i)
            piece = "" if every and (i + 1) % every == 0 else " " + word
            frames = face.token(word, piece)
            if frames:
                await response.body(frames)
        if job.directives.get("hang") == face.n_decoded:
            await trio.sleep_forever()
        prompt_tokens = tokenize(job.prompt, add_special=True)
        cached = self._slot_cache.get(slot, [])
        cache_n = 0
        if job.body.get("cache_prompt", True) is not False:
            while (
                cache_n < min(len(cached), len(prompt_tokens) - 1)
                and cached[cache_n] == prompt_tokens[cache_n]
            ):
                cache_n += 1
        self._slot_cache[slot] = prompt_tokens + tokenize(face.text)
        elapsed_s = time.perf_counter() - started
        final = face.final(slot, timings(job, face.n_decoded, elapsed_s, cache_n))
        return partial(send_final, job, response, final)
