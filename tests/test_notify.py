"""systemd's notify protocol (``orchestra/service/notify.py``) against a datagram socket
the test owns: READY=1 only once tasks are taken, STATUS= lines, STOPPING=1 on the drain
(and on SIGTERM, as a real process), watchdog pings that stop while the event loop is
blocked or a Queue does not answer, and resume after."""

from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from orchestra.actors.queue import Queue
from orchestra.service import Running, run_service
from orchestra.service.notify import Notifier
from orchestra.testing.fake_llama import FakeLlamaServer

from .harness import make_config

WAIT_S = 15.0


def abstract_name() -> str:
    return f"@orchestra-test-{secrets.token_hex(6)}"


@contextmanager
def listening_socket(name: str) -> Iterator[socket.socket]:
    """The test's end of ``$NOTIFY_SOCKET``: a unix datagram socket bound to ``name``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    try:
        yield sock
    finally:
        sock.close()


class Collector:
    """Reads the socket in a thread of its own, stamping each datagram with the monotonic
    time it arrived: it keeps reading while the event loop is blocked."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.1)
        self.inbox: queue.Queue[tuple[float, dict[str, str]]] = queue.Queue()
        self.seen: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in raw.decode().split("\n") if line)
            self.inbox.put((time.monotonic(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    async def next(self, within: float = WAIT_S) -> tuple[float, dict[str, str]]:
        """The next datagram; raises queue.Empty after ``within`` seconds."""
        item = await trio.to_thread.run_sync(partial(self.inbox.get, timeout=within))
        self.seen.append(item)
        return item

    async def until(
        self, predicate: Callable[[dict[str, str]], bool], within: float = WAIT_S
    ) -> tuple[float, dict[str, str]]:
        """The first datagram from now on that ``predicate`` accepts."""
        with trio.fail_after(within):
            while True:
                stamp, fields = await self.next(within)
                if predicate(fields):
                    return stamp, fields


@asynccontextmanager
async def notified_service(
    fake: FakeLlamaServer, notifier: Notifier, **sections: object
) -> AsyncIterator[tuple[Running, trio.Event]]:
    """The fake engine and orchestra with ``notifier``; does not wait for readiness."""
    try:
        async with trio.open_nursery() as outer:
            engine_url = await outer.start(fake.serve)
            config = make_config(engine_url, **sections)
            stop = trio.Event()
            async with trio.open_nursery() as inner:
                running = await inner.start(
                    partial(run_service, config, stop=stop, notifier=notifier)
                )
                yield running, stop
                stop.set()
            outer.cancel_scope.cancel()
    finally:
        notifier.close()


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    name = abstract_name()
    with listening_socket(name) as sock:
        reader = Collector(sock)
        try:
            yield name, reader
        finally:
            reader.close()


def is_ready(fields: dict[str, str]) -> bool:
    return fields.get("READY") == "1"


async def test_ready_only_once_tasks_are_taken(collector: tuple[str, Collector]) -> None:
    name, reader = collector
    fake = FakeLlamaServer()
    fake.set_loading(True)  # /health: 503 loading, so the pool is not ready yet
    notifier = Notifier("\0" + name[1:], status_every_s=0.05)
    async with notified_service(fake, notifier) as (running, _stop):
        # The listener is up and STATUS= lines come, but no READY=1 while the engine loads.
        _, first = await reader.until(lambda f: "STATUS" in f)
        assert first["STATUS"].startswith("starting: 0/1"), first
        assert "default: " in first["STATUS"], first  # why the pool is not ready
        assert not any(is_ready(f) for _, f in reader.seen)
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
            early = await client.post("/v1/tasks", json={"prompt": "p", "max_tokens": 1})
            assert early.status_code == 503
            assert not any(is_ready(f) for _, f in reader.seen)
            fake.set_loading(False)
            _, ready = await reader.until(is_ready)
            assert ready["STATUS"].startswith("ready: 1/1 model(s) loaded")
            response = await client.post("/v1/tasks", json={"prompt": "p", "max_tokens": 1})
            assert response.status_code == 202, response.text
    ready_count = sum(is_ready(f) for _, f in reader.seen)
    assert ready_count == 1


async def test_status_lines_follow_the_work_and_stopping_starts_the_drain(
    collector: tuple[str, Collector],
) -> None:
    name, reader = collector
    fake = FakeLlamaServer(total_slots=2, token_delay_s=0.01)
    notifier = Notifier("\0" + name[1:], status_every_s=0.05)
    async with notified_service(fake, notifier) as (running, stop):
        await reader.until(is_ready)
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
            body = {"prompt": "p", "max_tokens": 60}
            task = (await client.post("/v1/tasks", json=body)).json()
            _, busy = await reader.until(lambda f: "1/2 slots busy" in f.get("STATUS", ""))
            assert busy["STATUS"].startswith("ready: 1/1 model(s) loaded; 0 waiting")
            await client.get(task["stream_url"])  # to its end
            # The tokens are counted when the task ends: a line with a rate above zero.
            _, rate = await reader.until(
                lambda f: (
                    "0/2 slots busy" in f.get("STATUS", "")
                    and not f["STATUS"].endswith(" 0.0 tokens/s")
                )
            )
            assert rate["STATUS"].endswith(" tokens/s")
            assert not any("STOPPING" in f for _, f in reader.seen)
            stop.set()
            _, stopping = await reader.until(lambda f: "STOPPING" in f)
            assert stopping["STOPPING"] == "1"
            assert stopping["STATUS"].startswith("draining: ")


def block_the_loop(seconds: float) -> None:
    """The test hook: a synchronous call that holds the event loop (and the GIL-free
    thread reading the socket goes on)."""
    time.sleep(seconds)


async def test_watchdog_pings_stop_while_the_loop_is_blocked(
    collector: tuple[str, Collector],
) -> None:
    name, reader = collector
    interval = 0.2
    notifier = Notifier("\0" + name[1:], watchdog_s=2 * interval, status_every_s=60)

    def is_ping(fields: dict[str, str]) -> bool:
        return fields.get("WATCHDOG") == "1"

    async with notified_service(FakeLlamaServer(), notifier):
        await reader.until(is_ready)
        for _ in range(3):
            await reader.until(is_ping)
        blocked_at = time.monotonic()
        block_the_loop(5 * interval)
        unblocked_at = time.monotonic()
        after, _ = await reader.until(is_ping)
        await reader.until(is_ping)  # and they go on
    pings = [stamp for stamp, fields in reader.seen if is_ping(fields)]
    assert not [p for p in pings if blocked_at + 0.05 < p < unblocked_at]
    # The round that woke late was skipped: the next ping is a whole interval later, not
    # the instant the loop runs again.
    assert after - unblocked_at >= 0.75 * interval, (after - unblocked_at, pings)


async def test_watchdog_pings_stop_while_a_queue_does_not_answer(
    collector: tuple[str, Collector], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, reader = collector
    interval = 0.1
    notifier = Notifier("\0" + name[1:], watchdog_s=2 * interval, status_every_s=60)
    answering = [trio.Event()]
    answering[0].set()
    real_ping = Queue.ping

    async def ping(self: Queue) -> None:
        await answering[0].wait()  # a Queue stuck inside one step does not answer
        await real_ping(self)

    monkeypatch.setattr(Queue, "ping", ping)

    def is_ping(fields: dict[str, str]) -> bool:
        return fields.get("WATCHDOG") == "1"

    async with notified_service(FakeLlamaServer(), notifier):
        await reader.until(is_ready)
        await reader.until(is_ping)
        answering[0] = trio.Event()
        stuck_at = time.monotonic()
        await trio.sleep(8 * interval)  # the absence of pings takes waiting to see
        answered_at = time.monotonic()
        answering[0].set()
        after, _ = await reader.until(is_ping)
    late = [s for s, f in reader.seen if is_ping(f) and stuck_at + interval < s < answered_at]
    assert not late
    assert after >= answered_at


async def test_sigterm_sends_stopping_and_the_process_exits_0(
    collector: tuple[str, Collector], tmp_path: Path
) -> None:
    """``orchestra serve`` as systemd starts it: the variables from the environment."""
    name, reader = collector
    fake = FakeLlamaServer()
    async with trio.open_nursery() as nursery:
        engine_url = await nursery.start(fake.serve)
        config = trio.Path(tmp_path) / "orchestra.toml"
        await config.write_text(
            f'bind_addr = "127.0.0.1:0"\nshutdown_grace_s = 5\n[adapter]\nendpoint = "{engine_url}"\n'
        )
        env = {**os.environ, "NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"}
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "orchestra", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            await reader.until(is_ready, within=30)
            await reader.until(lambda f: f.get("WATCHDOG") == "1")
            process.send_signal(signal.SIGTERM)
            _, stopping = await reader.until(lambda f: "STOPPING" in f)
            assert stopping["STATUS"].startswith("draining")
            with trio.fail_after(30):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
        nursery.cancel_scope.cancel()


def test_environment_decides_what_is_sent() -> None:
    assert Notifier.from_environ({}) is None  # no NOTIFY_SOCKET: nothing at all
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    abstract = Notifier.from_environ({"NOTIFY_SOCKET": "@name"})
    assert abstract is not None
    assert abstract.address == "\0name"
    assert abstract.watchdog_s is None
    path = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"})
    assert path is not None
    assert path.address == "/run/x"
    assert path.watchdog_s == 30.0
    mine = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environ(mine)
    assert notifier is not None
    assert notifier.watchdog_s == 0.001
    other = Notifier.from_environ({**mine, "WATCHDOG_PID": "1"}, pid=4242)
    assert other is not None
    assert other.watchdog_s is None  # another process is to ping


def test_send_failures_are_logged_once_and_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier("\0orchestra-test-nobody-listens-" + secrets.token_hex(4))
    with caplog.at_level(logging.WARNING, logger="orchestra.notify"):
        assert notifier.send("READY=1") is False
        assert notifier.send("STATUS=x") is False
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1
