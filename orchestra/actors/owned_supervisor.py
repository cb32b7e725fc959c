"""OwnedReplicaSupervisor: starts, watches, heals and stops the llama-server orchestra owns.

One *life* of the engine is one process, from spawn to exit::

    run
    └── (per life) nursery
        ├── the process  (engine_process.run_engine: drains its pipes, notices its exit)
        └── the watch    (health until ready, then probes; kills it when it hangs)

A life ends when the process exits, which is noticed at once (a pidfd turns readable),
not at the next probe. The supervisor then tells the Queue (:meth:`Queue.replica_lost`),
which requeues the running tasks that had no token yet and ends the others with
``WORKER_RESET``, waits a capped exponential backoff and starts the next life. After
``crash_limit`` crashes within ``crash_window_s`` the pool reports ``unavailable`` (503
``POOL_UNAVAILABLE``) until a later start succeeds.

A *model swap* (:meth:`load_model`, for a pool reload) stops the current life on purpose
and starts a *trial* life on the new model. If the trial gets ready, the new model stays;
if it exits or times out before that, the supervisor rolls back at once to the previous
command, so the pool is never left without a model.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from orchestra.config import ReplicaConfig
from orchestra.engine.identity import engine_version, model_digest
from orchestra.engine.process import EngineCommand, Exited, port_in_use, run_engine
from orchestra.engine.protocol import Engine, EngineProps
from orchestra.errors import EngineError, EngineStartError, ErrorCode
from orchestra.messages import EngineAlarm, Reply
from orchestra.pool import ReplicaState, ReplicaStatus

log = logging.getLogger("orchestra.supervisor")
engine_log = logging.getLogger("orchestra.engine")

PROBE_STARTING_S = 0.025
"""Health probe interval while the engine loads."""
PROBE_READY_S = 2.0
"""Health probe interval while it serves."""
BACKOFF_FIRST_S = 0.25
"""The first wait before a restart; it doubles per crash up to ``restart_backoff_max_s``."""


_ENGINE_LEVEL = re.compile(r"[0-9.]+ ([DIWE]) ")
"""llama-server's text log lines: ``0.02.631.341 I srv  llama_server: model loaded``."""
_LEVELS = {"D": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR}


@attrs.frozen
class OwnedStatistics:
    """What the supervisor knows about its engine."""

    ready: bool
    state: ReplicaState
    detail: str
    props: EngineProps | None
    pid: int | None
    starts: int
    """Processes started, the first one included."""
    crashes_in_window: int
    engine_version: str
    model_digest: str
    model_path: str
    last_exit: str | None

    @property
    def restarts(self) -> int:
        """Processes started after the first: restarts after crashes, and model swaps."""
        return max(0, self.starts - 1)


@attrs.frozen
class _Swap:
    """A model swap: the command to try, and what to return to if it does not load."""

    command: EngineCommand
    digest: str
    reply: Reply[str | None]
    """Answered None once the new model is ready, or with why it did not load."""


@attrs.define
class OwnedReplicaSupervisor:
    """Owns the llama-server process: starts it, gates on its health, heals and stops it.

    Owns: the engine process (one at a time), its pipes, the crash history.
    Receives: the Queue's :class:`~orchestra.messages.EngineAlarm` when a session could
    not reach the engine or lost it (probe now), or when a stream went silent for
    ``decode_timeout_s`` (restart it); and :meth:`load_model` for a reload (the caller has
    drained the pool first).
    Sends: :class:`ReplicaStatus` on every change of state, and ``replica_lost`` to the
    Queue when a process ended under running tasks.
    Promises under cancellation: the process is stopped (SIGTERM, ``stop_grace_s``,
    SIGKILL) in a shielded scope before :meth:`run` returns, so no engine outlives it.
    """

    command: EngineCommand
    policy: ReplicaConfig
    engine: Engine
    report: Callable[[ReplicaStatus], Awaitable[None]]
    lost: Callable[[ErrorCode, str], Awaitable[None]]
    alarm: EngineAlarm = attrs.field(factory=EngineAlarm)
    """Raised by the Queue when a stream lost the engine (probe it) or went silent for
    ``decode_timeout_s`` (restart it)."""
    load_once: bool = False
    """A load on demand: when the first process exits or times out before it is ready,
    :meth:`run` raises :class:`EngineStartError` instead of trying again (the load
    failed; the Models actor ends the tasks waiting for it)."""
    pool_id: str = "default"
    """The pool it is the engine of: every line it logs carries it."""
    replica_id: str = ""
    """Which replica of the pool it runs (``pool/index``; empty: ``pool/0``)."""
    _ever_ready: bool = attrs.field(default=False, init=False)
    _log: logging.LoggerAdapter[logging.Logger] = attrs.field(init=False)
    _engine_log: logging.LoggerAdapter[logging.Logger] = attrs.field(init=False)
    _state: ReplicaState = attrs.field(default=ReplicaState.STARTING, init=False)
    _detail: str = attrs.field(default="not started yet", init=False)
    _props: EngineProps | None = attrs.field(default=None, init=False)
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)
    _starts: int = attrs.field(default=0, init=False)
    _crashes: deque[float] = attrs.field(factory=deque, init=False)
    _engine_version: str = attrs.field(default="", init=False)
    _model_digest: str = attrs.field(default="", init=False)
    _last_exit: str | None = attrs.field(default=None, init=False)
    _kill_reason: tuple[ErrorCode, str] | None = attrs.field(default=None, init=False)
    _life: trio.CancelScope | None = attrs.field(default=None, init=False)
    _swap: _Swap | None = attrs.field(default=None, init=False)
    """A swap asked for whose trial has not begun."""
    _trial: tuple[_Swap, EngineCommand, str] | None = attrs.field(default=None, init=False)
    """The swap being tried, with the command and digest to roll back to."""
    _swap_asked: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        fields = {"pool_id": self.pool_id, "replica_id": self.replica_id or f"{self.pool_id}/0"}
        self._log = logging.LoggerAdapter(log, fields)
        self._engine_log = logging.LoggerAdapter(engine_log, fields)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep an engine running until cancelled; started once the first process is.

        Raises :class:`EngineStartError` before that when its port is already taken.
        """
        self._engine_version = await engine_version(self.command.binary)
        self._model_digest = await model_digest(self.command.model)
        self._log.info(
            "engine %s, model %s (%s), on %s:%d",
            self._engine_version,
            self.command.model,
            self._model_digest,
            self.command.host,
            self.command.port,
        )
        if port_in_use(self.command.host, self.command.port):
            raise EngineStartError(
                f"cannot start llama-server: {self.command.host}:{self.command.port} (from "
                f"adapter.endpoint) is already in use by another process; stop it, or choose "
                f"another port in adapter.endpoint"
            )
        failures = 0
        while True:
            if self._swap is not None:
                self._begin_trial(self._swap)
                failures = 0
            ended, ready_for = await self._live(task_status)
            task_status = trio.TASK_STATUS_IGNORED  # started once, by the first life
            code, detail = ended
            if self.load_once and not self._ever_ready:
                raise EngineStartError(f"the model did not load: {detail}")
            if self._swap is not None:  # stopped to load another model: no crash
                await self.lost(code, detail)
                continue
            if self._trial is not None:  # the new model did not get ready: roll back
                self._roll_back(detail)
                await self.lost(code, detail)
                continue
            now = trio.current_time()
            self._crashes.append(now)
            while self._crashes and self._crashes[0] < now - self.policy.crash_window_s:
                self._crashes.popleft()
            # A life that served for a while starts the doubling over.
            failures = 1 if ready_for >= self.policy.restart_backoff_max_s else failures + 1
            backoff = min(BACKOFF_FIRST_S * 2 ** (failures - 1), self.policy.restart_backoff_max_s)
            self._log.error("%s; restarting in %.2f s", detail, backoff)
            await self.lost(code, detail)
            if len(self._crashes) >= self.policy.crash_limit:
                detail = (
                    f"llama-server failed {len(self._crashes)} times within "
                    f"{self.policy.crash_window_s:.0f} s (last: {detail}); still retrying"
                )
                await self._set(ReplicaState.UNAVAILABLE, detail)
            else:
                await self._set(ReplicaState.STARTING, f"{detail}; restarting")
            with trio.move_on_after(backoff):
                await self._swap_asked.wait()  # a reload does not wait out the backoff
            while port_in_use(self.command.host, self.command.port):
                self._log.error("port %d is taken by another process; waiting", self.command.port)
                await trio.sleep(self.policy.restart_backoff_max_s)

    def _begin_trial(self, swap: _Swap) -> None:
        self._trial = (swap, self.command, self._model_digest)
        self._swap = None
        self.command, self._model_digest = swap.command, swap.digest
        self._log.info("loading model %s (%s)", swap.command.model, swap.digest)

    def _roll_back(self, detail: str) -> None:
        assert self._trial is not None
        swap, self.command, self._model_digest = self._trial
        self._trial = None
        self._log.error(
            "model %s did not load (%s); rolling back to %s",
            swap.command.model,
            detail,
            self.command.model,
        )
        swap.reply.send(detail)

    async def _live(
        self, task_status: trio.TaskStatus[None]
    ) -> tuple[tuple[ErrorCode, str], float]:
        """One process from spawn to exit: why it ended, and how long it was ready."""
        self._kill_reason, self._props = None, None
        self.alarm.take()  # a hang of the previous life is not this one's
        ready_at: list[float] = []
        exited: Exited | None = None
        async with trio.open_nursery() as life:
            self._life = life.cancel_scope

            async def process(*, task_status: trio.TaskStatus[subprocess.Popen[bytes]]) -> None:
                nonlocal exited
                exited = await run_engine(
                    self.command,
                    stop_grace_s=self.policy.stop_grace_s,
                    on_line=self._engine_line,
                    task_status=task_status,
                )
                life.cancel_scope.cancel()

            try:
                self._process = await life.start(process)
            except OSError as exc:  # the binary went missing or lost its execute bit
                task_status.started()
                detail = f"cannot start llama-server {self.command.binary}: {exc}"
                self._last_exit = detail
                return (ErrorCode.WORKER_RESET, detail), 0.0
            self._starts += 1
            self._log.info(
                "llama-server started (pid %d): %s", self._process.pid, self.command.argv()
            )
            task_status.started()
            life.start_soon(self._watch, ready_at)
        self._life = None
        self._process, self._props = None, None
        # No exit status: the life was cancelled for a model swap and the engine stopped.
        detail = exited.detail if exited is not None else "llama-server stopped for a reload"
        self._last_exit = detail
        ready_for = trio.current_time() - ready_at[0] if ready_at else 0.0
        return self._kill_reason or (ErrorCode.WORKER_RESET, detail), ready_for

    async def _watch(self, ready_at: list[float]) -> None:
        """Probe until ready (or kill it when loading takes too long), then keep probing."""
        deadline = trio.current_time() + self.policy.start_timeout_s
        await self._set(self._down_state(), "loading the model")
        while True:
            if trio.current_time() > deadline:
                self._kill(
                    ErrorCode.WORKER_RESET,
                    f"llama-server did not load within {self.policy.start_timeout_s:.0f} s",
                )
                return
            if await self._healthy():
                break
            await trio.sleep(PROBE_STARTING_S)
        ready_at.append(trio.current_time())
        self._ever_ready = True
        if self._trial is not None:  # the new model loaded: it stays
            swap = self._trial[0]
            self._trial = None
            self._crashes.clear()
            swap.reply.send(None)
        await self._set(ReplicaState.READY, "ready")
        self._log.info("engine ready: %d slot(s)", self._slots())
        while True:
            with trio.move_on_after(PROBE_READY_S):
                await self.alarm.wait()
            woken = self.alarm.is_raised()
            hung = self.alarm.take()
            if hung is not None:
                self._kill(ErrorCode.DECODE_TIMEOUT, f"llama-server hung ({hung})")
                return
            healthy = await self._healthy()
            # After a nudge, always report: the Queue stopped dispatching until it hears.
            if woken or healthy != (self._state is ReplicaState.READY):
                await self._set(
                    ReplicaState.READY if healthy else ReplicaState.STARTING,
                    "ready" if healthy else self._detail,
                )

    async def _healthy(self) -> bool:
        try:
            probe = await self.engine.health()
            if probe.ready and self._props is None:
                self._props = await self.engine.props()
        except EngineError as exc:
            self._detail = exc.message
            return False
        if not probe.ready:
            self._detail = probe.detail
        return probe.ready

    def _kill(self, code: ErrorCode, detail: str) -> None:
        """End this life now: the process exits and :meth:`_live` reports ``detail``."""
        self._kill_reason = (code, detail)
        if self._process is not None:
            self._process.kill()

    def _down_state(self) -> ReplicaState:
        return (
            ReplicaState.UNAVAILABLE
            if self._state is ReplicaState.UNAVAILABLE
            else ReplicaState.STARTING
        )

    async def _set(self, state: ReplicaState, detail: str) -> None:
        self._state, self._detail = state, detail
        await self.report(ReplicaStatus(state, self._slots(), detail))

    def _slots(self) -> int:
        return self._props.total_slots if self._props is not None else 0

    def _engine_line(self, stream: str, line: str) -> None:
        """One line of llama-server's output into orchestra's log, at its own level; once
        the engine serves, its per-request info lines go to DEBUG."""
        if not line:
            return
        level = logging.INFO
        if found := _ENGINE_LEVEL.match(line):
            level = _LEVELS.get(found[1], logging.INFO)
            if level == logging.INFO and self._state is ReplicaState.READY:
                level = logging.DEBUG
        elif line.startswith("warning:"):
            level = logging.WARNING
        self._engine_log.log(level, "llama-server %s: %s", stream, line)

    # -- messages from the Queue (synchronous, never block) ------------------------------

    def probe_now(self, reason: str = "") -> None:
        """Probe at once (a session could not reach the engine)."""
        self.alarm.suspect(reason)

    def engine_hung(self, detail: str) -> None:
        """A stream went silent for ``decode_timeout_s``: kill and restart the engine."""
        self.alarm.hung(detail)

    async def load_model(self, model: Path, digest: str) -> str | None:
        """Stop the engine and start it on ``model``; None once it is ready, or why it did
        not load (the previous model is then being started again).

        The caller drains the pool first and asks for one swap at a time. Cancelling the
        caller does not stop the swap.
        """
        if self._swap is not None or self._trial is not None:
            raise RuntimeError("a model swap is already under way")
        reply: Reply[str | None] = Reply()
        self._swap = _Swap(attrs.evolve(self.command, model=model), digest, reply)
        self._swap_asked.set()
        self._swap_asked = trio.Event()
        if self._life is not None:
            self._life.cancel()
        return await reply.receive()

    # -- reads -------------------------------------------------------------------------

    def statistics(self) -> OwnedStatistics:
        """A snapshot for health and logs."""
        return OwnedStatistics(
            ready=self._state is ReplicaState.READY,
            state=self._state,
            detail=self._detail,
            props=self._props,
            pid=None if self._process is None else self._process.pid,
            starts=self._starts,
            crashes_in_window=len(self._crashes),
            engine_version=self._engine_version,
            model_digest=self._model_digest,
            model_path=str(self.command.model),
            last_exit=self._last_exit,
        )
