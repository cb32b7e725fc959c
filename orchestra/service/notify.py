"""systemd's notify protocol, spoken by orchestra itself over ``$NOTIFY_SOCKET``.

Each message is one datagram of ``KEY=VALUE`` lines on a unix datagram socket (a path, or
an abstract name written with a leading ``@``); see ``sd_notify(3)``. orchestra sends:

- ``READY=1`` once, when the HTTP listener accepts connections and every always-loaded
  pool serves (a task submitted right after it gets 202);
- ``STATUS=...`` every :data:`STATUS_EVERY_S` when it changed: models loaded, tasks
  waiting and running, slots, tokens/s (what ``systemctl status`` shows);
- ``STOPPING=1`` when the drain begins (SIGTERM or SIGINT);
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, each after a round trip to every pool's
  Queue answered within that half and only when the ping task itself woke on time (a
  blocked event loop wakes it late, or not at all): a stuck Queue or loop stops the
  pings and systemd restarts the service. With ``$WATCHDOG_PID`` naming another process,
  no pings.

Without ``$NOTIFY_SOCKET`` there is no :class:`Notifier` and nothing runs. Every send is
non-blocking; a failure is logged once and never stops the service.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from orchestra.pool import Residency

if TYPE_CHECKING:
    from orchestra.http.context import Actors

log = logging.getLogger("orchestra.notify")

STATUS_EVERY_S = 5.0
"""How often the ``STATUS=`` line is refreshed (sent only when its text changed)."""
LATE_FRACTION = 0.5
"""A ping task that wakes later than this fraction of its interval found the event loop
blocked: that round sends no ``WATCHDOG=1``."""


@attrs.define(eq=False)
class Notifier:
    """A connection to the service manager's notify socket (one datagram per send)."""

    address: str
    """The socket's path, or an abstract name starting with NUL (``@`` in the variable)."""
    watchdog_s: float | None = None
    """``$WATCHDOG_USEC`` in seconds, when systemd expects pings from this process."""
    status_every_s: float = STATUS_EVERY_S
    _sock: socket.socket | None = attrs.field(default=None, init=False)
    _failed: bool = attrs.field(default=False, init=False)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> Notifier | None:
        """The notifier ``environ`` (``os.environ``) asks for; None without
        ``$NOTIFY_SOCKET`` (or with one that is not a unix socket, logged)."""
        env = os.environ if environ is None else environ
        where = env.get("NOTIFY_SOCKET", "")
        if not where:
            return None
        if not where.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s is not a unix socket: not notifying systemd", where)
            return None
        address = "\0" + where[1:] if where.startswith("@") else where
        return cls(address, watchdog_s=_watchdog_s(env, os.getpid() if pid is None else pid))

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram, without blocking; whether it went. The first
        failure is logged, later ones are not."""
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s (not retried in the log)",
                            self.address.replace("\0", "@"), exc)  # fmt: skip
            return False
        return True

    def close(self) -> None:
        """Close the socket (a later send opens another)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_s(env: Mapping[str, str], pid: int) -> float | None:
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds if seconds > 0 else None


Probe = Callable[[], Awaitable[None]]
"""A round trip to one actor (``Queue.ping``): returns once it answered."""


@attrs.define(eq=False)
class Watchdog:
    """Sends ``WATCHDOG=1`` every ``interval_s`` while every probe answers in time and the
    loop wakes its task on time."""

    notifier: Notifier
    interval_s: float
    probes: Sequence[tuple[str, Probe]]
    """Each actor's name (for the log) and its round trip."""
    pings: int = attrs.field(default=0, init=False)
    skipped: int = attrs.field(default=0, init=False)
    _healthy: bool = attrs.field(default=True, init=False)

    async def run(self) -> None:
        """Ping until cancelled."""
        while True:
            due = trio.current_time() + self.interval_s
            await trio.sleep_until(due)
            late = trio.current_time() - due
            if late > self.interval_s * LATE_FRACTION:
                self._unhealthy(f"the event loop was blocked ({late:.1f} s late)")
                continue
            silent = await self._silent_actor()
            if silent is not None:
                self._unhealthy(f"{silent} did not answer within {self.interval_s:.1f} s")
                continue
            if not self._healthy:
                log.info("watchdog: every actor answers again; pinging systemd")
                self._healthy = True
            if self.notifier.send("WATCHDOG=1"):
                self.pings += 1

    async def _silent_actor(self) -> str | None:
        """The first actor that did not answer within the interval, or None."""
        waiting_for = None
        with trio.move_on_after(self.interval_s):
            for name, probe in self.probes:
                waiting_for = name
                await probe()
            return None
        return waiting_for

    def _unhealthy(self, why: str) -> None:
        self.skipped += 1
        if self._healthy:
            log.warning("watchdog: %s; no ping to systemd (it restarts orchestra when "
                        "pings stay away for WatchdogSec)", why)  # fmt: skip
            self._healthy = False


async def run_status(notifier: Notifier, status: Callable[[float], str]) -> None:
    """Send ``STATUS=status(seconds since the last line)`` every ``status_every_s`` when
    it changed, until cancelled."""
    last, last_at = "", trio.current_time()
    while True:
        now = trio.current_time()
        line = status(now - last_at)
        last_at = now
        if line != last and notifier.send(f"STATUS={line}"):
            last = line
        await trio.sleep(notifier.status_every_s)


@attrs.define(eq=False)
class StatusLine:
    """The ``STATUS=`` text of a service, read from its actors' ``statistics()``: e.g.
    ``ready: 1/2 models loaded; 3 waiting, 2/4 slots busy; 41.5 tokens/s``."""

    actors: Actors
    phase: str = "starting"
    """``starting``, ``ready`` or ``draining``."""
    _tokens: int = attrs.field(default=0, init=False)

    def __call__(self, elapsed_s: float) -> str:
        pools = [pool.queue.statistics() for pool in self.actors.models]
        loaded = sum(q.pool.residency is Residency.LOADED and q.pool.ready for q in pools)
        waiting = sum(q.queue_depth for q in pools)
        busy = sum(q.slots_busy for q in pools)
        slots = sum(q.slots_total for q in pools)
        tokens = self.actors.metrics.tokens_total
        rate = (tokens - self._tokens) / elapsed_s if elapsed_s > 0 else 0.0
        self._tokens = tokens
        line = (
            f"{self.phase}: {loaded}/{len(pools)} model(s) loaded; {waiting} waiting, "
            f"{busy}/{slots} slots busy; {rate:.1f} tokens/s"
        )
        unready = [f"{q.pool.pool_id}: {q.pool.detail}" for q in pools if not q.pool.ready]
        if self.phase == "starting" and unready:
            line += "; " + "; ".join(unready)
        return line


async def run_notify(
    notifier: Notifier, actors: Actors, line: StatusLine, stop: trio.Event
) -> None:
    """Everything a started service tells systemd, until cancelled: ``STATUS=`` lines from
    now on; ``READY=1`` once every always-loaded pool serves (unless ``stop`` came first),
    then watchdog pings. ``STOPPING=1`` is the service's to send (:func:`stopping`)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_status, notifier, line)
        for pool in actors.models:
            if pool.spec.fixed:
                await pool.queue.wait_ready()
        if stop.is_set():
            return
        line.phase = "ready"
        notifier.send("READY=1", f"STATUS={line(0.0)}")
        log.info("told systemd: ready")
        if notifier.watchdog_s is not None:
            probes = [(f"queue {pool.id}", pool.queue.ping) for pool in actors.models]
            nursery.start_soon(Watchdog(notifier, notifier.watchdog_s / 2, probes).run)


def stopping(notifier: Notifier, line: StatusLine) -> None:
    """The drain begins: ``STOPPING=1`` with the status line."""
    line.phase = "draining"
    notifier.send("STOPPING=1", f"STATUS={line(0.0)}")
