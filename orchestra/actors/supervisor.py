"""ReplicaSupervisor: knows whether the engine can take work, and tells the Queue.

Attached mode: the engine at ``adapter.endpoint`` is run by someone else. The supervisor
probes its ``/health``, reads ``total_slots`` from ``/props`` once it is healthy, and
reports every change of readiness to the Queue. It starts, restarts and stops nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from orchestra.engine.protocol import Engine, EngineProps
from orchestra.errors import EngineError
from orchestra.messages import EngineAlarm
from orchestra.pool import PoolState, ReplicaStatus

log = logging.getLogger(__name__)

PROBE_READY_S = 2.0
"""Probe interval while the engine is healthy."""
PROBE_UNREADY_S = 0.25
"""Probe interval while it is loading or unreachable."""


class ReplicaSummary(Protocol):
    """What the HTTP face reads from either supervisor's ``statistics()``: what the engine
    is, not whether it is ready (the pool's one state is the Queue's:
    :class:`~orchestra.pool.PoolStatus`)."""

    @property
    def props(self) -> EngineProps | None: ...
    @property
    def engine_version(self) -> str | None: ...
    @property
    def model_digest(self) -> str | None: ...
    @property
    def model_path(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def restarts(self) -> int: ...


class Supervisor(Protocol):
    """What the service needs from a supervisor, attached or owning."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    def probe_now(self, reason: str = "") -> None: ...
    def statistics(self) -> ReplicaSummary: ...


@attrs.frozen
class SupervisorStatistics:
    """What the supervisor last learned about its replica."""

    ready: bool
    detail: str
    props: EngineProps | None
    probes: int

    @property
    def engine_version(self) -> str | None:
        """What the engine reports (``build_info``); an attached engine's package version
        is not known."""
        return self.props.build_info if self.props is not None else None

    @property
    def model_digest(self) -> str | None:
        """Unknown in attached mode: orchestra does not know which file it loaded."""
        return None

    @property
    def model_path(self) -> str | None:
        """The model file the engine says it loaded (``/props``), once known."""
        return self.props.model_path if self.props is not None else None

    @property
    def pid(self) -> None:
        """Unknown in attached mode: orchestra did not start the process."""
        return None

    @property
    def restarts(self) -> int:
        """Always 0: orchestra restarts nothing it does not own."""
        return 0


@attrs.define
class ReplicaSupervisor:
    """Health-gates one attached replica.

    Owns: the probe loop of one engine endpoint and what it learned (readiness, props).
    Receives: the Queue's :class:`~orchestra.messages.EngineAlarm` (or :meth:`probe_now`)
    when a session could not reach the engine or lost it.
    Sends: :class:`ReplicaStatus` to the Queue on every change, and after every nudge.
    Under cancellation it stops probing; it holds no resource of its own.
    """

    engine: Engine
    report: Callable[[ReplicaStatus], Awaitable[None]]
    alarm: EngineAlarm = attrs.field(factory=EngineAlarm)
    """Raised by the Queue when a stream could not reach the engine or lost it."""
    _ready: bool = attrs.field(default=False, init=False)
    _detail: str = attrs.field(default="not probed yet", init=False)
    _props: EngineProps | None = attrs.field(default=None, init=False)
    _probes: int = attrs.field(default=0, init=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe forever; ready after the first probe has been reported."""
        await self._probe_and_report(force=True)
        task_status.started()
        while True:
            with trio.move_on_after(PROBE_READY_S if self._ready else PROBE_UNREADY_S):
                await self.alarm.wait()
            forced = self.alarm.is_raised()
            self.alarm.take()  # an attached engine is not restarted: a hang is a probe too
            await self._probe_and_report(force=forced)

    def probe_now(self, reason: str = "") -> None:
        """Ask for an immediate probe (synchronous, never blocks)."""
        self.alarm.suspect(reason)

    async def _probe_and_report(self, *, force: bool) -> None:
        was = (self._ready, self._slots())
        ready, detail = await self._probe()
        self._probes += 1
        if ready and self._props is None:
            try:
                self._props = await self.engine.props()
            except EngineError as exc:
                ready, detail = False, f"/props failed: {exc.message}"
        if not ready:
            self._props = None
        self._ready, self._detail = ready, detail
        if force or was != (self._ready, self._slots()):
            if ready != was[0]:
                log.info("engine %s: %s", "ready" if ready else "not ready", detail)
            state = PoolState.READY if ready else PoolState.STARTING
            await self.report(ReplicaStatus(state, self._slots(), detail))

    async def _probe(self) -> tuple[bool, str]:
        try:
            probe = await self.engine.health()
        except EngineError as exc:
            return False, exc.message
        return probe.ready, probe.detail

    def _slots(self) -> int:
        return self._props.total_slots if self._props is not None else 0

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of what the last probe learned."""
        return SupervisorStatistics(self._ready, self._detail, self._props, self._probes)
