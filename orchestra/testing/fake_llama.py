"""A fake llama-server speaking the real engine's native HTTP API, for tests and benchmarks.

It fakes the parts of llama.cpp's ``llama-server`` an HTTP supervisor talks to, with the
shapes and behaviours of ``shared/llama-server-reference.md``:

- ``GET /health`` (and ``/v1/health``), ``GET /props``, ``GET /slots``, ``GET /metrics``,
  ``POST /tokenize`` and ``POST /completion`` (also ``/completions``);
- 503 ``Loading model`` on every route while loading (:meth:`FakeLlamaServer.set_loading`);
- errors as ``{"error": {"code", "message", "type"}}`` with the status equal to the code;
- a slot per generation; when all slots are busy a request waits in a FIFO and, when
  streaming, gets no status line or headers until a slot takes it;
- streams of ``data: {json}`` frames, one per token, ending with a ``stop: true`` frame that
  carries the final object (``timings``, ``tokens_predicted``, ...); no ``[DONE]``;
- a client that closes its connection stops its generation at once and frees its slot;
- ``id_slot`` waits for that slot; each slot keeps the tokens of its last prompt and
  output, and with ``cache_prompt`` a request reuses their common prefix (``timings.cache_n``);
  ``POST /slots/N?action=erase`` empties a slot's cache (501 with ``slot_actions`` off, as
  without ``--slot-save-path``).

Generation is deterministic: token ``i`` for a prompt and seed is one of a fixed list of
words picked by sha256(prompt, seed, i), returned as the piece ``" " + word``. Tokenization
is one token per whitespace-separated word (plus BOS ``1`` with ``add_special``), and the
token id of a word is the same in ``/tokenize`` and in stream frames.

Directives written anywhere in the prompt provoke faults through the real API (they count
as words when tokenizing, like any other text):

``[[error-before:STATUS]]``  a JSON error instead of a response: 400 ``invalid_request_error``,
                             500 ``server_error``, 503 ``unavailable_error`` (no slot available)
``[[error-mid:N]]``          after N tokens, a ``data: {"error": ...}`` frame (500, "Context
                             size has been exceeded."), then the body ends; without
                             ``stream`` a 500 JSON error
``[[drop:N]]``               after N tokens the connection is cut with no final frame
``[[hang:N]]``               after N tokens, nothing more until the client goes away
``[[empty:K]]``              every K-th piece is ``""`` (text held back while a stop string
                             may be forming); such frames still count in ``tokens_predicted``

Run it alone with ``python -m orchestra.testing.fake_llama --port 8081 --slots 2``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qs

import attrs
import hypercorn.config
import hypercorn.trio
import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_N_PREDICT: Final = 16
"""Tokens generated when a request gives no ``n_predict`` (or gives -1)."""

BOS_TOKEN: Final = 1
"""The token id ``/tokenize`` puts first when ``add_special`` is true."""

# fmt: off
WORDS: Final = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber",
    "basil", "cedar", "dune", "ember", "fern", "grove", "heron", "iris", "jade", "kelp",
    "lotus", "maple", "nectar", "olive", "pine", "quartz", "reed", "sage", "thyme", "umber",
    "vine", "willow", "yarrow",
)
"""The vocabulary generated text is drawn from."""
# fmt: on

_DIRECTIVE = re.compile(r"\[\[(error-before|error-mid|drop|hang|empty):(\d+)\]\]")
_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
_ERROR_MESSAGE = {
    400: "fake invalid request",
    500: "fake server error",
    503: "no slot available",
}
_JSON = (b"content-type", b"application/json; charset=utf-8")


class _Abort(Exception):
    """Raised out of the ASGI app after the response started, so hypercorn cuts the socket."""


def _dumps(value: Any) -> bytes:
    """Compact JSON, as the engine writes it."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def token_id(word: str) -> int:
    """The fake vocabulary's id for one whitespace-free word (always >= 2)."""
    return 2 + int.from_bytes(hashlib.sha256(word.encode()).digest()[:3], "big")


def tokenize(text: str, add_special: bool = False) -> list[int]:
    """Token ids of ``text`` as the fake's ``/tokenize`` returns them."""
    ids = [token_id(word) for word in text.split()]
    return [BOS_TOKEN, *ids] if add_special else ids


def generated_word(prompt: str, seed: object, index: int) -> str:
    """The word generated as token ``index`` for ``prompt`` and ``seed`` (deterministic)."""
    key = json.dumps([prompt, seed, index], sort_keys=True).encode()
    return WORDS[int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % len(WORDS)]


def error_body(code: int, message: str, kind: str | None = None, **extra: Any) -> bytes:
    """The engine's error envelope ``{"error": {"code", "message", "type", ...}}``."""
    error = {
        "code": code,
        "message": message,
        "type": kind or _ERROR_TYPE.get(code, "server_error"),
    }
    return _dumps({"error": {**error, **extra}})


@attrs.define
class _Waiter:
    """A request waiting for a slot; ``slot`` is filled in when one is handed to it."""

    ready: trio.Event = attrs.field(factory=trio.Event)
    slot: int | None = None
    wants: int | None = None
    """The slot it asked for (``id_slot``), or None for any."""


@attrs.define
class _Job:
    """One accepted completion request."""

    prompt: str
    seed: object
    n_predict: int
    n_prompt: int
    stream: bool
    directives: dict[str, int]
    body: dict[str, Any]

    @property
    def id_slot(self) -> int | None:
        """The slot asked for (``id_slot`` >= 0), else None."""
        wanted = self.body.get("id_slot")
        ok = isinstance(wanted, int) and not isinstance(wanted, bool) and wanted >= 0
        return wanted if ok else None


def _dispatch_on_resize(server: FakeLlamaServer, _: attrs.Attribute[int], value: int) -> int:
    server._dispatch(value)
    return value


@attrs.define
class FakeLlamaServer:
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

    disconnects: int = attrs.field(default=0, init=False)
    """Completion requests whose client went away before their response ended."""
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

    _loading: bool = attrs.field(default=False, init=False)
    _slot_tasks: dict[int, int] = attrs.field(factory=dict, init=False)
    _next_task: int = attrs.field(default=0, init=False)
    _waiters: deque[_Waiter] = attrs.field(factory=deque, init=False)
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

    # -- slots -----------------------------------------------------------------------------

    def _free_slot(self, total: int) -> int | None:
        return next((i for i in range(total) if i not in self._slot_tasks), None)

    def _occupy(self, slot: int) -> None:
        self._slot_tasks[slot] = self._next_task
        self._next_task += 1
        self.completions_started += 1

    def _dispatch(self, total: int) -> None:
        """Hand free slots to waiting requests: a free slot goes to the oldest request that
        asked for it, else to the oldest that asked for any slot."""
        handed = False
        for slot in range(total):
            if slot in self._slot_tasks:
                continue
            waiter = next((w for w in self._waiters if w.wants == slot), None)
            waiter = waiter or next((w for w in self._waiters if w.wants is None), None)
            if waiter is None:
                continue
            self._waiters.remove(waiter)
            self._occupy(slot)
            self.deferred -= 1
            waiter.slot = slot
            waiter.ready.set()
            handed = True
        if handed:
            self._notify()

    def _release(self, slot: int) -> None:
        """Free ``slot`` and hand it to the oldest waiter; the caller notifies."""
        del self._slot_tasks[slot]
        self._dispatch(self.total_slots)

    async def _take_slot(self, wants: int | None = None) -> int:
        """Occupy a slot (slot ``wants`` if given, modulo the slot count), waiting FIFO
        behind earlier requests while none is free."""
        if wants is not None:
            wants %= max(self.total_slots, 1)
            if wants not in self._slot_tasks and all(w.wants != wants for w in self._waiters):
                self._occupy(wants)
                self._notify()
                return wants
        elif not self._waiters and (slot := self._free_slot(self.total_slots)) is not None:
            self._occupy(slot)
            self._notify()
            return slot
        waiter = _Waiter(wants=wants)
        self._waiters.append(waiter)
        self.deferred += 1
        self._notify()
        try:
            await waiter.ready.wait()
        except BaseException:
            if waiter.slot is not None:  # handed over just as we were cancelled
                self._release(waiter.slot)
            else:
                self._waiters.remove(waiter)
                self.deferred -= 1
            self._notify()
            raise
        assert waiter.slot is not None
        return waiter.slot

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
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self._loading:
            await _read_json(receive)  # drained, so that the connection can be reused
            await _respond(send, 503, error_body(503, "Loading model"))
            return
        if path in ("/health", "/v1/health") and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/props" and method == "GET":
            await _respond(send, 200, _dumps(self._props()))
        elif path == "/slots" and method == "GET":
            await self._slots(scope, send)
        elif path == "/metrics" and method == "GET":
            await _respond(send, 200, self._metrics(), b"text/plain; version=0.0.4")
        elif path == "/tokenize" and method == "POST":
            await self._tokenize(receive, send)
        elif path.startswith("/slots/") and method == "POST":
            await self._slot_action(scope, receive, send)
        elif path in ("/completion", "/completions") and method == "POST":
            await self._completion(scope, receive, send)
        else:
            await _read_json(receive)
            await _respond(send, 404, error_body(404, "File Not Found"))

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

    async def _slots(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        fail_on_no_slot = query.get("fail_on_no_slot", ["0"])[0] not in ("", "0", "false")
        if fail_on_no_slot and self._free_slot(self.total_slots) is None:
            await _respond(send, 503, error_body(503, "no slot available"))
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
        await _respond(send, 200, _dumps(slots))

    async def _slot_action(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _read_json(receive)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        action = query.get("action", [""])[0]
        if not self.slot_actions:
            message = "This server does not support slots action. Start it with `--slot-save-path`"
            await _respond(send, 501, error_body(501, message, "not_supported_error"))
            return
        try:
            slot = int(scope["path"].removeprefix("/slots/"))
        except ValueError:
            slot = -1
        if action != "erase" or not 0 <= slot < self.total_slots:
            await _respond(send, 400, error_body(400, "Invalid slot action or id"))
            return
        erased = len(self._slot_cache.pop(slot, []))
        await _respond(send, 200, _dumps({"id_slot": slot, "n_erased": erased}))

    def _metrics(self) -> bytes:
        lines = [
            "# TYPE llamacpp:requests_processing gauge",
            f"llamacpp:requests_processing {self.busy_slots}",
            "# TYPE llamacpp:requests_deferred gauge",
            f"llamacpp:requests_deferred {self.deferred}",
        ]
        return ("\n".join(lines) + "\n").encode()

    async def _tokenize(self, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            message = '"content" must be provided' if isinstance(body, dict) else "Invalid JSON"
            await _respond(send, 400, error_body(400, message))
            return
        tokens = tokenize(body["content"], body.get("add_special") is True)
        await _respond(send, 200, _dumps({"tokens": tokens}))

    # -- completions -----------------------------------------------------------------------

    def _accept(self, body: Any) -> _Job | tuple[int, bytes]:
        """Validate a completion body: the job to run, or the error response to send."""
        if not isinstance(body, dict):
            return 400, error_body(400, "Invalid JSON: the body must be a JSON object")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return 400, error_body(400, '"prompt" must be provided')
        n_predict = next(
            (body[k] for k in ("n_predict", "max_tokens", "max_completion_tokens") if k in body),
            None,
        )
        if n_predict is None or n_predict == -1:
            n_predict = DEFAULT_N_PREDICT
        if not isinstance(n_predict, int) or isinstance(n_predict, bool) or n_predict < 0:
            return 400, error_body(400, "Field 'n_predict': Value must be an integer >= -1")
        directives = {name: int(arg) for name, arg in _DIRECTIVE.findall(prompt)}
        if "error-before" in directives:
            status = directives["error-before"]
            return status, error_body(status, _ERROR_MESSAGE.get(status, "fake error"))
        n_prompt = len(tokenize(prompt, add_special=True))
        if n_prompt + n_predict > self._slot_ctx:
            message = (
                f"request ({n_prompt + n_predict} tokens) exceeds the available context size "
                f"({self._slot_ctx} tokens), try increasing it"
            )
            extra = {"n_prompt_tokens": n_prompt, "n_ctx": self._slot_ctx}
            return 400, error_body(400, message, "exceed_context_size_error", **extra)
        stream = body.get("stream") is True
        return _Job(prompt, body.get("seed", -1), n_predict, n_prompt, stream, directives, body)

    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        if isinstance(body, dict):
            self.completion_bodies.append(body)
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            self.completion_headers.append(headers)
            self._notify()
        job = self._accept(body)
        if isinstance(job, tuple):
            await _respond(send, *job)
            return

        generation = trio.CancelScope()
        response = _Response(send, generation)
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
                    ending = await self._generate(job, slot, response)
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
            raise _Abort("[[drop]] directive: cutting the connection")

    async def _generate(
        self, job: _Job, slot: int, response: _Response
    ) -> Callable[[], Awaitable[None]]:
        """Produce the tokens (streaming them); return what sends the end of the response."""
        if job.stream:
            await response.start(
                200, (b"content-type", b"text/event-stream"), (b"x-accel-buffering", b"no")
            )
        started = time.perf_counter()
        pieces: list[str] = []
        every = job.directives.get("empty", 0)
        for i in range(job.n_predict):
            if job.directives.get("error-mid") == i:
                return partial(self._send_mid_error, job, response)
            if job.directives.get("drop") == i:
                response.aborted = True
                return partial(self._abort, job, response)
            if job.directives.get("hang") == i:
                await trio.sleep_forever()
            await trio.sleep(self.token_delay_s)
            word = generated_word(job.prompt, job.seed, i)
            piece = "" if every and (i + 1) % every == 0 else " " + word
            pieces.append(piece)
            if job.stream:
                frame = {
                    "index": 0,
                    "content": piece,
                    "tokens": [token_id(word)],
                    "stop": False,
                    "id_slot": -1,
                    "tokens_predicted": i + 1,
                    "tokens_evaluated": job.n_prompt,
                }
                await response.body(b"data: " + _dumps(frame) + b"\n\n")
        if job.directives.get("hang") == job.n_predict:
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
        self._slot_cache[slot] = prompt_tokens + tokenize("".join(pieces))
        final = self._final(job, slot, "".join(pieces), time.perf_counter() - started)
        final["timings"]["cache_n"] = cache_n
        final["timings"]["prompt_n"] = job.n_prompt - cache_n
        return partial(self._send_final, job, response, final)

    def _final(self, job: _Job, slot: int, content: str, elapsed_s: float) -> dict[str, Any]:
        n = job.n_predict
        predicted_ms = elapsed_s * 1000
        return {
            "index": 0,
            "content": "" if job.stream else content,
            "tokens": [],
            "id_slot": slot,
            "stop": True,
            "model": self.model_path,
            "tokens_predicted": n,
            "tokens_evaluated": job.n_prompt,
            "generation_settings": {
                "n_predict": n,
                "seed": job.seed,
                "temperature": job.body.get("temperature", 0.8),
                "stream": job.stream,
            },
            "prompt": job.prompt,
            "has_new_line": False,
            "truncated": False,
            "stop_type": "limit",
            "stopping_word": "",
            "tokens_cached": 0,
            "timings": {
                "cache_n": 0,
                "prompt_n": job.n_prompt,
                "prompt_ms": 0.5,
                "prompt_per_token_ms": 0.5 / job.n_prompt,
                "prompt_per_second": job.n_prompt / 0.0005,
                "predicted_n": n,
                "predicted_ms": predicted_ms,
                "predicted_per_token_ms": predicted_ms / n if n else 0.0,
                "predicted_per_second": n / max(elapsed_s, 1e-9),
            },
        }

    @staticmethod
    async def _send_final(job: _Job, response: _Response, final: dict[str, Any]) -> None:
        if job.stream:
            await response.body(b"data: " + _dumps(final) + b"\n\n", last=True)
        else:
            await response.whole(200, _dumps(final))

    @staticmethod
    async def _send_mid_error(job: _Job, response: _Response) -> None:
        error = error_body(500, "Context size has been exceeded.", "server_error")
        if job.stream:
            await response.body(b"data: " + error + b"\n\n", last=True)
        else:
            await response.whole(500, error)

    @staticmethod
    async def _abort(job: _Job, response: _Response) -> None:
        if not job.stream:  # promise a body, then never send it
            await response.start(200, _JSON, (b"content-length", b"4096"))


@attrs.define
class _Response:
    """The sending side of one completion; notes a client that went away."""

    send: Send
    generation: trio.CancelScope
    """Cancelled when the client goes away, to stop generating at once."""
    gone: bool = False
    """The client disconnected (or a send to it failed) before the response ended."""
    ending: bool = False
    """The last message is being (or has been) sent."""
    aborted: bool = False
    """The connection is to be cut once the app returns (``[[drop]]``)."""

    def client_left(self) -> None:
        """The client went away: stop generating, unless the response was already sent."""
        if not self.ending:
            self.gone = True
            self.generation.cancel()

    async def start(self, status: int, *headers: tuple[bytes, bytes]) -> None:
        """Send the status line and headers."""
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def whole(self, status: int, body: bytes) -> None:
        """Send a complete JSON response."""
        await self.start(status, _JSON, (b"content-length", str(len(body)).encode()))
        await self.body(body, last=True)

    async def body(self, data: bytes, *, last: bool = False) -> None:
        """Send one piece of the body in its own ASGI message, so it is written at once."""
        if last:
            # hypercorn reports ``http.disconnect`` to the app while it completes a
            # response: from here on that is no longer a client leaving early.
            self.ending = True
        await self._send({"type": "http.response.body", "body": data, "more_body": not last})

    async def _send(self, message: Message) -> None:
        try:
            await self.send(message)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.ending = False
            self.client_left()
            await trio.lowlevel.checkpoint()  # raises Cancelled inside ``generation``


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_json(receive: Receive) -> Any:
    """The request body parsed as JSON, or None when it is not JSON."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = _JSON[1]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def main(argv: list[str] | None = None) -> None:
    """Serve the fake engine until SIGINT (Ctrl-C) or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestra.testing.fake_llama",
        description="A fake llama-server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--slots", type=int, default=1, help="parallel slots (-np)")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--ctx-size", type=int, default=2048, help="whole context (-c)")
    parser.add_argument("--model", default="models/fake.gguf", help="reported model path")
    args = parser.parse_args(argv)
    fake = FakeLlamaServer(
        total_slots=args.slots,
        token_delay_s=args.token_delay_ms / 1000,
        n_ctx=args.ctx_size,
        model_path=args.model,
    )

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(partial(fake.serve, host=args.host, port=args.port))
                print(f"fake llama-server listening on {url}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)


if __name__ == "__main__":
    main()
