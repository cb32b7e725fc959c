"""ReplicaSupervisor: knows whether an attached engine can take work, and tells the Queue.

Attached mode: the engine at an endpoint is run by someone else (this box or another).
The supervisor probes its ``/health``, reads ``total_slots`` from ``/props`` once it is
healthy, and reports every change of its replica's state to the Queue. It starts,
restarts and stops nothing. After ``DOWN_AFTER`` failed probes in a row the replica is
``down`` and probed with a doubling backoff; a replica that answers ``/health`` but let a
stream go silent (the Queue's hang alarm) is ``suspect``, out of dispatch until a probe
task (one token) completes on it.
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
from orchestra.pool import ReplicaState, ReplicaStatus

log = logging.getLogger(__name__)

PROBE_READY_S = 2.0
"""Probe interval while the engine is healthy."""
PROBE_UNREADY_S = 0.25
"""Probe interval while it is loading or unreachable."""
DOWN_AFTER = 3
"""Failed probes in a row after which an attached replica is ``down``."""
DOWN_BACKOFF_MAX_S = 30.0
"""The longest wait between probes of a replica that is down (it doubles up to this)."""
PROBE_TASK: dict[str, object] = {
    "prompt": "ping",
    "n_predict": 1,
    "temperature": 0.0,
    "cache_prompt": False,
}
"""The probe task a suspect replica must complete before it is dispatched to again."""


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
    state: ReplicaState = ReplicaState.STARTING

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

    Owns: the probe loop of one engine endpoint and what it learned (its state, props).
    Receives: the Queue's :class:`~orchestra.messages.EngineAlarm` (or :meth:`probe_now`)
    when a session could not reach the engine or lost it (probe now), or when a stream
    went silent (the replica becomes ``suspect``).
    Sends: :class:`ReplicaStatus` to the Queue on every change, and after every nudge.
    Under cancellation it stops probing; it holds no resource of its own.
    """

    engine: Engine
    report: Callable[[ReplicaStatus], Awaitable[None]]
    alarm: EngineAlarm = attrs.field(factory=EngineAlarm)
    """Raised by the Queue when a stream could not reach the engine, lost it, or hung."""
    replica_id: str = "default/0"
    _state: ReplicaState = attrs.field(default=ReplicaState.STARTING, init=False)
    _detail: str = attrs.field(default="not probed yet", init=False)
    _props: EngineProps | None = attrs.field(default=None, init=False)
    _probes: int = attrs.field(default=0, init=False)
    _failures: int = attrs.field(default=0, init=False)
    """Failed probes (or probe tasks) in a row."""

    @property
    def _ready(self) -> bool:
        return self._state is ReplicaState.READY

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe forever; ready after the first probe has been reported."""
        await self._probe_and_report(force=True)
        task_status.started()
        while True:
            with trio.move_on_after(self._interval()):
                await self.alarm.wait()
            forced = self.alarm.is_raised()
            hung = self.alarm.take()  # an attached engine is not restarted
            if hung is not None and self._ready:
                self._failures = 0
                await self._set(ReplicaState.SUSPECT, f"no progress: {hung}")
                log.warning("replica %s is suspect: %s", self.replica_id, hung)
            await self._probe_and_report(force=forced)

    def _interval(self) -> float:
        if self._ready:
            return PROBE_READY_S
        if self._state in (ReplicaState.DOWN, ReplicaState.SUSPECT):
            return float(min(PROBE_UNREADY_S * 2**self._failures, DOWN_BACKOFF_MAX_S))
        return PROBE_UNREADY_S

    def probe_now(self, reason: str = "") -> None:
        """Ask for an immediate probe (synchronous, never blocks)."""
        self.alarm.suspect(reason)

    async def _probe_and_report(self, *, force: bool) -> None:
        was = (self._state, self._slots())
        ready, detail = await self._probe()
        self._probes += 1
        if ready and self._props is None:
            try:
                self._props = await self.engine.props()
            except EngineError as exc:
                ready, detail = False, f"/props failed: {exc.message}"
        if not ready:
            self._props = None
        state = ReplicaState.READY if ready else ReplicaState.STARTING
        if ready and self._state is ReplicaState.SUSPECT:
            ready, detail = await self._probe_task()
            state = ReplicaState.READY if ready else ReplicaState.SUSPECT
        self._failures = 0 if ready else self._failures + 1
        if state is ReplicaState.STARTING and (
            self._failures >= DOWN_AFTER or self._state is ReplicaState.DOWN
        ):
            state = ReplicaState.DOWN
        self._state, self._detail = state, detail
        if force or was != (self._state, self._slots()):
            if state is not was[0]:
                log.info("replica %s %s: %s", self.replica_id, state, detail)
            await self.report(ReplicaStatus(state, self._slots(), detail))

    async def _probe_task(self) -> tuple[bool, str]:
        """Run the probe task on a suspect replica: ready again once it completes."""
        try:
            await self.engine.complete(PROBE_TASK, lambda piece: None)
        except EngineError as exc:
            return False, f"the probe task failed: {exc.message}"
        return True, "ready (a probe task completed)"

    async def _set(self, state: ReplicaState, detail: str) -> None:
        self._state, self._detail = state, detail
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
        return SupervisorStatistics(
            self._ready, self._detail, self._props, self._probes, self._state
        )
