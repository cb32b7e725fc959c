"""A fake llama-server speaking the real engine's native HTTP API, for tests and benchmarks.

It answers ``/health``, ``/props``, ``/slots``, ``/tokenize`` and ``/completion`` (also
``/completions``) with the shapes of ``shared/llama-server-reference.md``: 503
``Loading model`` while loading, ``data: {json}`` stream frames ending with a
``stop: true`` frame and no ``[DONE]``, JSON error bodies, a slot per generation with
requests waiting (headers unsent) while all slots are busy, and a slot freed the moment
its client disconnects.

Generation is deterministic: token ``i`` of a prompt and seed is a word picked by
sha256(prompt, seed, i). Directives in the prompt provoke faults through the real API:

``[[error-before:STATUS]]``  a JSON error instead of a stream (400, 500 or 503)
``[[error-mid:N]]``          after N tokens, a ``data: {"error": ...}`` frame, then the end
``[[drop:N]]``               after N tokens, the connection is cut with no final frame
``[[hang:N]]``               after N tokens, silence until the client goes away
``[[empty:K]]``              every K-th piece is ``""`` (text held back), still counted

Run it alone with ``python -m orchestra.testing.fake_llama --port 8081``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "amber",
    "basil",
    "cedar",
    "dune",
    "ember",
    "fern",
    "grove",
    "heron",
    "iris",
    "jade",
    "kelp",
    "lotus",
    "maple",
    "nectar",
    "olive",
    "pine",
    "quartz",
    "reed",
    "sage",
    "thyme",
    "umber",
    "vine",
    "willow",
    "yarrow",
    "zephyr",
]
_DIRECTIVE = re.compile(r"\[\[(error-before|error-mid|drop|hang|empty):(\d+)\]\]")


class _Abort(Exception):
    """Raised inside the app to make hypercorn cut the connection."""


def _error_body(status: int, message: str, kind: str, **extra: Any) -> bytes:
    return json.dumps(
        {"error": {"code": status, "message": message, "type": kind, **extra}}
    ).encode()


_ERROR_KIND = {400: "invalid_request_error", 500: "server_error", 503: "unavailable_error"}


@attrs.define
class FakeLlamaServer:
    """The fake engine. Knobs may be changed by a test at any time."""

    total_slots: int = 1
    token_delay_s: float = 0.0
    n_ctx: int = 2048
    model_path: str = "models/fake.gguf"
    disconnects: int = attrs.field(default=0, init=False)
    """Generations whose client went away before the stream ended."""
    completions_started: int = attrs.field(default=0, init=False)
    completions_finished: int = attrs.field(default=0, init=False)
    deferred: int = attrs.field(default=0, init=False)
    """Requests waiting for a free slot."""
    completion_bodies: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    completion_headers: list[dict[str, str]] = attrs.field(factory=list, init=False)
    _loading: bool = attrs.field(default=False, init=False)
    _busy: set[int] = attrs.field(factory=set, init=False)
    _waiters: deque[trio.Event] = attrs.field(factory=deque, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)

    @property
    def busy_slots(self) -> int:
        """Slots generating right now."""
        return len(self._busy)

    def set_loading(self, loading: bool) -> None:
        """While loading, every route answers 503 ``Loading model``."""
        self._loading = loading
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checking on every change of state."""
        while not predicate():
            await self._changed.wait()

    # -- serving -----------------------------------------------------------------------

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; reports the base URL (``http://127.0.0.1:PORT``)."""
        config = hypercorn.config.Config()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = None
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(hypercorn.trio.serve, self, config)
            task_status.started(urls[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self._loading:
            await _json(send, 503, _error_body(503, "Loading model", "unavailable_error"))
            return
        if method == "GET" and path in ("/health", "/v1/health"):
            await _json(send, 200, b'{"status":"ok"}')
        elif method == "GET" and path == "/props":
            await _json(send, 200, json.dumps(self._props()).encode())
        elif method == "GET" and path == "/slots":
            slots = [
                {
                    "id": i,
                    "n_ctx": self.n_ctx // self.total_slots,
                    "is_processing": i in self._busy,
                    "id_task": -1,
                }
                for i in range(self.total_slots)
            ]
            await _json(send, 200, json.dumps(slots).encode())
        elif method == "POST" and path == "/tokenize":
            body = await _read_json(receive)
            if not isinstance(body, dict) or not isinstance(body.get("content"), str):
                await _json(
                    send,
                    400,
                    _error_body(400, '"content" must be provided', "invalid_request_error"),
                )
                return
            tokens = self._tokenize(body["content"], bool(body.get("add_special", False)))
            await _json(send, 200, json.dumps({"tokens": tokens}).encode())
        elif method == "POST" and path in ("/completion", "/completions"):
            await self._completion(scope, receive, send)
        else:
            await _json(send, 404, _error_body(404, "File Not Found", "not_found_error"))

    def _props(self) -> dict[str, Any]:
        return {
            "default_generation_settings": {"n_ctx": self.n_ctx, "params": {}},
            "total_slots": self.total_slots,
            "model_path": self.model_path,
            "model_alias": self.model_path,
            "build_info": "b0-unknown",
            "is_sleeping": False,
        }

    @staticmethod
    def _tokenize(text: str, add_special: bool) -> list[int]:
        ids = [2 + int.from_bytes(hashlib.sha256(w.encode()).digest()[:2]) for w in text.split()]
        return [1, *ids] if add_special else ids

    # -- generation --------------------------------------------------------------------

    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_json(receive)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            await _json(
                send, 400, _error_body(400, '"prompt" must be provided', "invalid_request_error")
            )
            return
        self.completion_bodies.append(body)
        self.completion_headers.append(
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        )
        prompt: str = body["prompt"]
        n_predict = body.get("n_predict", body.get("max_tokens", 16))
        n_predict = 16 if not isinstance(n_predict, int) or n_predict < 0 else n_predict
        directives = {name: int(arg) for name, arg in _DIRECTIVE.findall(prompt)}
        if "error-before" in directives:
            status = directives["error-before"]
            await _json(
                send,
                status,
                _error_body(
                    status,
                    "fake failure" if status != 503 else "no slot available",
                    _ERROR_KIND.get(status, "server_error"),
                ),
            )
            return
        n_prompt = len(self._tokenize(prompt, True))
        slot_ctx = self.n_ctx // max(self.total_slots, 1)
        if n_prompt + n_predict > slot_ctx:
            message = (
                f"request ({n_prompt + n_predict} tokens) exceeds the available context size "
                f"({slot_ctx} tokens), try increasing it"
            )
            await _json(
                send,
                400,
                _error_body(
                    400,
                    message,
                    "exceed_context_size_error",
                    n_prompt_tokens=n_prompt,
                    n_ctx=slot_ctx,
                ),
            )
            return
        stream = bool(body.get("stream", False))
        async with trio.open_nursery() as nursery:
            gone = trio.Event()

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_disconnect)
            slot = -1
            try:
                slot = await self._take_slot()
                await self._generate(
                    send, body, prompt, n_predict, n_prompt, slot, directives, stream
                )
                self.completions_finished += 1
            finally:
                if slot >= 0:
                    self._busy.discard(slot)
                    self._release()
                if gone.is_set() or nursery.cancel_scope.cancel_called:
                    self.disconnects += 1
                self._notify()
            nursery.cancel_scope.cancel()

    async def _take_slot(self) -> int:
        if len(self._busy) >= self.total_slots or self._waiters:
            ready = trio.Event()
            self._waiters.append(ready)
            self.deferred += 1
            self._notify()
            try:
                await ready.wait()
            finally:
                self.deferred -= 1
                if not ready.is_set():
                    self._waiters.remove(ready)
        slot = min(set(range(self.total_slots)) - self._busy)
        self._busy.add(slot)
        self.completions_started += 1
        self._notify()
        return slot

    def _release(self) -> None:
        if self._waiters and len(self._busy) < self.total_slots:
            self._waiters.popleft().set()

    async def _generate(
        self,
        send: Send,
        body: dict[str, Any],
        prompt: str,
        n_predict: int,
        n_prompt: int,
        slot: int,
        directives: dict[str, int],
        stream: bool,
    ) -> None:
        seed = body.get("seed", -1)
        started = time.perf_counter()
        pieces: list[str] = []
        if stream:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
        for i in range(n_predict):
            if directives.get("error-mid") == i and stream:
                error = _error_body(500, "Context size has been exceeded.", "server_error")
                await _chunk(send, b"data: " + error + b"\n\n")
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if directives.get("drop") == i and stream:
                raise _Abort("dropping the connection")
            if directives.get("hang") == i:
                await trio.sleep_forever()
            if self.token_delay_s:
                await trio.sleep(self.token_delay_s)
            else:
                await trio.lowlevel.checkpoint()
            every = directives.get("empty", 0)
            piece = "" if every and (i + 1) % every == 0 else " " + self._word(prompt, seed, i)
            pieces.append(piece)
            if stream:
                frame = {
                    "index": 0,
                    "content": piece,
                    "tokens": [i + 2],
                    "stop": False,
                    "id_slot": -1,
                    "tokens_predicted": i + 1,
                    "tokens_evaluated": n_prompt,
                }
                await _chunk(send, b"data: " + json.dumps(frame).encode() + b"\n\n")
        elapsed_ms = (time.perf_counter() - started) * 1000
        final = {
            "index": 0,
            "content": "" if stream else "".join(pieces),
            "tokens": [],
            "id_slot": slot,
            "stop": True,
            "model": self.model_path,
            "tokens_predicted": n_predict,
            "tokens_evaluated": n_prompt,
            "stop_type": "limit",
            "stopping_word": "",
            "tokens_cached": 0,
            "truncated": False,
            "timings": {
                "cache_n": 0,
                "prompt_n": n_prompt,
                "prompt_ms": 0.5,
                "predicted_n": n_predict,
                "predicted_ms": elapsed_ms,
                "predicted_per_token_ms": elapsed_ms / max(n_predict, 1),
                "predicted_per_second": n_predict / max(elapsed_ms / 1000, 1e-9),
            },
        }
        if stream:
            await _chunk(send, b"data: " + json.dumps(final).encode() + b"\n\n")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await _json(send, 200, json.dumps(final).encode())

    @staticmethod
    def _word(prompt: str, seed: Any, i: int) -> str:
        digest = hashlib.sha256(f"{prompt}\0{seed}\0{i}".encode()).digest()
        return _WORDS[int.from_bytes(digest[:4]) % len(_WORDS)]


async def _read_json(receive: Receive) -> Any:
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body", False):
            break
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


def main() -> None:
    """Serve the fake engine until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeLlamaServer(total_slots=args.slots, token_delay_s=args.token_delay_ms / 1000)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(fake.serve, host=args.host, port=args.port))
            print(f"fake llama-server listening on {url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
