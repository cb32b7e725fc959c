"""The Queue's face: everything the other actors and the HTTP face call on it.

- **requests**: each is a message put on the Queue's bounded inbox, answered through a
  one-shot :class:`~orchestra.messages.Reply` once its run loop has applied it; the
  session tasks report through the same inbox;
- **waits** for a condition of the pool or the line;
- **snapshots** (``view()``, ``statistics()``, ``figures()``) and ``subscribe()`` for a
  task's stream: synchronous reads that change nothing.

:class:`~orchestra.actors.queue.Queue` inherits all of it; nothing here writes task state
(that is the run loop's alone, in :mod:`orchestra.actors.queue`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection

import attrs
import trio

from orchestra.actors.keep_output import keep_output
from orchestra.actors.queue_messages import (
    Admitted,
    BeginUnload,
    Cancel,
    CancelAll,
    CancelReason,
    DeleteSession,
    DrainStart,
    Ping,
    QueueMsg,
    RefuseNew,
    ReplicaChanged,
    ReplicaLink,
    ReplicaLost,
    SessionEnded,
    SetDraining,
    SetResidency,
    StopRunning,
    Submit,
    UnloadMode,
)
from orchestra.actors.stream_session import StreamSession
from orchestra.artifacts import ArtifactStore
from orchestra.engine.protocol import Engine
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.events import EventLog, Subscription
from orchestra.messages import Completed, Reply
from orchestra.obs import logs, tracing
from orchestra.obs.tracing import TaskTrace
from orchestra.pool import PoolState, PoolStatus, ReplicaStatus, Residency
from orchestra.scheduling import admission_checks
from orchestra.scheduling.figures import QueueFigures, ServiceFigures, ms
from orchestra.scheduling.record import Task
from orchestra.scheduling.replicas import ReplicaBook, ReplicaEntry
from orchestra.scheduling.running import Running
from orchestra.scheduling.sessions import SessionBook, SessionView
from orchestra.scheduling.slo import SloSnapshot
from orchestra.scheduling.table import TaskTable, task_summary
from orchestra.scheduling.waiting import WaitingLine
from orchestra.task import Priority, TaskRequest, TaskState
from orchestra.views import QueueStatistics, TaskSummary, TaskView

log = logging.getLogger("orchestra.queue")

INBOX_MIN = 64
"""Messages the Queue's inbox holds at least; it holds as many as may wait in both
classes too, so a burst of submissions the line has room for never finds it full. A
submission that does (the Queue is that far behind) is refused with 429."""
ERASE_WAIT_S = 5.0
"""How long deleting a session waits for the engine to erase the session's slot."""


class QueueFace:
    """The Queue's requests: every method sends one message and waits for its answer.

    Cancelling a caller leaves the Queue consistent: a message already sent is applied
    all the same (its answer is dropped), one not sent yet never is.
    """

    # The Queue's state these methods read (declared here for the type checker).
    replicas: tuple[ReplicaLink, ...]
    capacity: int
    batch_capacity: int | None
    engine_backlog: int
    orphan_grace_s: float
    sessions: SessionBook
    figures: QueueFigures
    artifacts: ArtifactStore | None
    _inbox: trio.MemorySendChannel[QueueMsg]
    _inbox_out: trio.MemoryReceiveChannel[QueueMsg]
    _table: TaskTable
    _waiting: WaitingLine
    _pool: PoolStatus
    _pool_changed: trio.Event
    _replica_changed: trio.Event
    _quiet: trio.Event
    _idle: trio.Event
    _running: Running
    _replicas: ReplicaBook
    _sessions: trio.Nursery | None
    _idle_since: float | None
    _last_used: float

    def __attrs_post_init__(self) -> None:
        size = max(INBOX_MIN, self.capacity + (self.batch_capacity or self.capacity))
        self._inbox, self._inbox_out = trio.open_memory_channel[QueueMsg](size)

    def queue_full(self, priority: Priority = Priority.INTERACTIVE) -> Refusal:
        """The refusal of a submission that finds its class (or the inbox) full."""
        retry_ms = self._retry_ms()
        return admission_checks.queue_full(priority, self.capacity, self.batch_capacity, retry_ms)

    def _retry_ms(self) -> int:
        return self.figures.retry_ms(self._effective_slots())

    def _effective_slots(self) -> int:
        """The ready replicas' slots, weighed by each one's measured speed."""
        return self.figures.effective_slots(self._replicas.ready_slots_by_id())

    def _predicted_start_ms(self, ahead: list[Task]) -> int:
        """When a task behind ``ahead`` would be dispatched, from what runs now on every
        ready replica, counting each one's slots by its measured speed (and the load it
        waits for, when the model is not in memory)."""
        ready = self._replicas.ready_slots_by_id()
        slots = self.figures.effective_slots(ready)
        backlog = self.engine_backlog * len(ready)
        load_ms = 0 if self._pool.residency is Residency.LOADED else self._pool.load_ms
        return load_ms + self.figures.predicted_start_ms(self._running, ahead, slots, backlog)

    async def submit(self, request: TaskRequest, fingerprint: str) -> Admitted:
        """Admit a task or raise :class:`Refusal`; never waits for queue space (a full
        inbox is a full queue: 429)."""
        reply: Reply[Admitted | Refusal] = Reply()
        trace = tracing.admitting.get()
        try:
            self._inbox.send_nowait(
                Submit(request, fingerprint, reply, logs.correlation_id.get(), trace)
            )
        except trio.WouldBlock:
            pending = self._inbox.statistics().current_buffer_used
            raise Refusal(
                ErrorCode.ADMISSION_REJECT,
                f"orchestra is taking in {pending} requests at once, more than it holds; "
                f"retry in {self._retry_ms()} ms",
                retriable=True,
                retry_after_ms=self._retry_ms(),
                policy_label="inbox",
            ) from None
        if trace is not None:
            trace.hand_over()  # the message will be applied: its trace is the Queue's now
        result = await reply.receive()
        if isinstance(result, Refusal):
            raise result
        return result

    async def cancel(self, task_id: str, reason: CancelReason = "client") -> TaskState | None:
        """Cancel a task; its state afterwards, or None if unknown. Idempotent."""
        reply: Reply[TaskState | None] = Reply()
        await self._inbox.send(Cancel(task_id, reason, reply))
        return await reply.receive()

    async def delete_session(self, session_id: str) -> tuple[SessionView, bool] | None:
        """Forget a session (cancelling its task in progress) and erase its slot's cache;
        the session as it was and whether its cache was erased, or None if unknown."""
        reply: Reply[tuple[SessionView, tuple[int, int] | None] | None] = Reply()
        await self._inbox.send(DeleteSession(session_id, reply))
        deleted = await reply.receive()
        if deleted is None:
            return None
        view, where = deleted
        erased = False
        if where is not None:
            replica, slot = where
            # The engine erases a busy slot once it is free; by then it holds another
            # task's context, so waiting long buys nothing.
            with trio.move_on_after(ERASE_WAIT_S):
                try:
                    erased = await self.replicas[replica].engine.erase_slot(slot)
                except EngineError as exc:
                    log.warning("could not erase slot %d: %s", slot, exc.message)
        return view, erased

    async def replica_status(self, status: ReplicaStatus, replica: int = 0) -> None:
        """Tell the Queue whether replica ``replica`` (an index) is ready and how many
        slots it has; returns once the Queue has applied it."""
        reply: Reply[None] = Reply()
        await self._inbox.send(ReplicaChanged(replica, status, reply))
        await reply.receive()

    async def replica_lost(self, code: ErrorCode, detail: str, replica: int = 0) -> None:
        """Replica ``replica``'s engine process died or hung; returns once its tasks are
        dealt with."""
        reply: Reply[None] = Reply()
        await self._inbox.send(ReplicaLost(replica, code, detail, reply))
        await reply.receive()

    async def refuse_new(self) -> None:
        """From now on, refuse submissions (shutdown has begun)."""
        reply: Reply[None] = Reply()
        await self._inbox.send(RefuseNew(reply))
        await reply.receive()

    async def ping(self) -> None:
        """Return once the run loop has taken and answered a message (the watchdog's
        round trip); changes nothing."""
        reply: Reply[None] = Reply()
        await self._inbox.send(Ping(reply))
        await reply.receive()

    async def cancel_all(self, reason: CancelReason) -> int:
        """Cancel every task that has not ended; how many there were."""
        reply: Reply[int] = Reply()
        await self._inbox.send(CancelAll(reason, reply))
        return await reply.receive()

    async def stop_running(self) -> tuple[int, int]:
        """Requeue the running tasks without a token, cancel the others (a drain's
        deadline); how many were requeued and how many cancelled."""
        reply: Reply[tuple[int, int]] = Reply()
        await self._inbox.send(StopRunning(reply))
        return await reply.receive()

    async def set_draining(self, on: bool) -> DrainStart:
        """Start or end a drain; what was running and waiting at that moment."""
        reply: Reply[DrainStart] = Reply()
        await self._inbox.send(SetDraining(on, reply))
        return await reply.receive()

    async def set_residency(
        self,
        residency: Residency,
        load_ms: int = 0,
        fail_waiting: tuple[ErrorCode, str] | None = None,
    ) -> None:
        """Say whether the model is in memory (the Models actor's word); see
        :class:`~orchestra.actors.queue_messages.SetResidency`."""
        reply: Reply[None] = Reply()
        await self._inbox.send(SetResidency(residency, load_ms, fail_waiting, reply))
        await reply.receive()

    async def begin_unload(self, mode: UnloadMode) -> tuple[bool, int]:
        """Stop dispatching for an unload; whether it began and how many running tasks a
        ``force`` cancelled (see :class:`~orchestra.actors.queue_messages.BeginUnload`)."""
        reply: Reply[tuple[bool, int]] = Reply()
        await self._inbox.send(BeginUnload(mode, reply))
        return await reply.receive()

    # -- the session tasks' reports (run in the Queue's sessions nursery) ------------------

    async def _run_session(
        self, task: Task, attempt: int, session: StreamSession, replica: int
    ) -> None:
        assert self._sessions is not None
        watcher = trio.CancelScope()
        self._sessions.start_soon(self._watch_readers, task, watcher)
        try:
            outcome = await session.run()
            if isinstance(outcome, Completed) and task.request.artifact is not None:
                outcome = await keep_output(self.artifacts, task, outcome)
        finally:
            watcher.cancel()
        await self._inbox.send(SessionEnded(task, attempt, outcome, replica))

    async def _watch_readers(self, task: Task, scope: trio.CancelScope) -> None:
        """Cancel a running task whose readers all left and none came back in time."""
        with scope:
            while True:
                await task.log.wait_abandoned()
                with trio.move_on_after(self.orphan_grace_s) as waited:
                    await task.log.wait_subscribed()
                if waited.cancelled_caught:
                    await self._inbox.send(Cancel(task.id, "orphaned", None))
                    return

    # -- waits and reads (never change anything) -----------------------------------------

    async def wait_ready(self, ready: bool = True) -> None:
        """Return once the pool is ready (or not, with ``ready=False``)."""
        while self._pool.ready != ready:
            await self._pool_changed.wait()
        await trio.lowlevel.checkpoint()

    async def wait_pool_state(self, state: PoolState) -> None:
        """Return once the pool is in ``state``."""
        while self._pool.state is not state:
            await self._pool_changed.wait()
        await trio.lowlevel.checkpoint()

    def next_replica_change(self) -> trio.Event:
        """An event set at the next report of any replica's state (a probe's answer, a
        loss) or of the model's residency: take it, read what you need, then wait on it,
        and no change is missed."""
        return self._replica_changed

    async def wait_quiet(self) -> None:
        """Return once no session runs (tasks may still wait)."""
        while not self._quiet.is_set():
            await self._quiet.wait()
        await trio.lowlevel.checkpoint()

    async def wait_idle(self) -> None:
        """Return once nothing waits and no session runs."""
        while not self._idle.is_set():
            await self._idle.wait()
        await trio.lowlevel.checkpoint()

    def subscribe(
        self, task_id: str, start: int = 0, *, counted: bool = True
    ) -> Subscription | None:
        """A reader of a known task's events from event ``start`` on (None: unknown); one
        not ``counted`` only watches (:meth:`~orchestra.events.EventLog.subscribe`)."""
        task = self._table.get(task_id)
        return None if task is None else task.log.subscribe(start, counted=counted)

    def trace_of(self, task_id: str) -> TaskTrace | None:
        """The trace of a known task, for its readers' spans (None: unknown, or not
        traced)."""
        task = self._table.get(task_id)
        return None if task is None else task.trace

    def log_of(self, task_id: str) -> EventLog | None:
        """The event log of a known task, to inspect (tests, tools); streams subscribe."""
        task = self._table.get(task_id)
        return None if task is None else task.log

    def view(self, task_id: str) -> TaskView | None:
        """A snapshot of a known task."""
        task = self._table.get(task_id)
        if task is None:
            return None
        position = predicted = None
        if task.state is TaskState.QUEUED:
            position = self._waiting.position(task)
            predicted = self._predicted_start_ms(self._waiting.order()[:position])
        started, ended = task.dispatched_at, task.ended_at
        return TaskView(
            task_id=task.id,
            state=task.state,
            queue_position=position,
            predicted_start_ms=predicted,
            tokens_out=task.tokens_out or task.log.tokens,
            attempts=task.attempts,
            error_code=task.error_code,
            queue_wait_ms=None if started is None else ms(started - task.submitted_at),
            run_ms=None if started is None or ended is None else ms(ended - started),
            artifact_id=task.artifact_id,
            artifact_error=task.artifact_error,
        )

    def task_list(self, states: Collection[TaskState], limit: int) -> list[TaskSummary]:
        """At most ``limit`` known tasks in ``states``: the running ones in dispatch order,
        then the waiting line in its dispatch order (each with its predicted start), then
        those that ended, the latest first."""
        now = trio.current_time()
        listed: list[TaskSummary] = []
        if TaskState.RUNNING in states:
            listed += [task_summary(task, now) for task in self._running]
        if TaskState.QUEUED in states:
            order = self._waiting.order()
            for position, task in enumerate(order[: max(0, limit - len(listed))]):
                predicted = self._predicted_start_ms(order[:position])
                listed.append(task_summary(task, now, position, predicted))
        if any(state.terminal for state in states):
            ended = (t for t in self._table.recently_ended() if t.state in states)
            listed += [task_summary(task, now) for task in itertools.islice(ended, limit)]
        return listed[:limit]

    def session_view(self, session_id: str) -> SessionView | None:
        """A snapshot of a live session."""
        session = self.sessions.get(session_id)
        return None if session is None else self.sessions.view(session, trio.current_time())

    def statistics(self) -> QueueStatistics:
        """A snapshot for health, capabilities and metrics."""
        return QueueStatistics(
            pool=self._pool,
            queue_depth=len(self._waiting),
            queue_capacity=self.capacity,
            slots_total=self._replicas.ready_slots,
            slots_busy=self._running.busy,
            tasks_known=len(self._table),
            mean_service_ms=ms(self.figures.rate.mean_service_s),
            ended=self._table.ended(),
            idle_since=self._idle_since,
            last_used=self._last_used,
            oldest_wait=self._waiting.oldest_submitted_at(),
            tokens_out_total=self._table.tokens_out_total()
            + sum(task.log.tokens for task in self._running),
        )

    def ready_engine(self) -> Engine:
        """The engine of the first ready replica that counts tokens (the first replica's
        when none is ready)."""
        for link, entry in zip(self.replicas, self._replicas, strict=True):
            if entry.ready and link.counts_tokens:
                return link.engine
        return self.replicas[0].engine

    def replica_states(self) -> list[ReplicaEntry]:
        """A snapshot of every replica as the Queue sees it: state, slots, room held."""
        return [attrs.evolve(entry) for entry in self._replicas]

    def replica_figures(self, replica: str) -> SloSnapshot:
        """Time to first token and speed of the tasks ``replica`` completed lately."""
        return self.figures.replica_snapshot(replica, trio.current_time())

    def service_figures(self) -> ServiceFigures:
        """How the tasks completed lately were served, for ``GET /v1/replicasets``."""
        return self.figures.snapshot(trio.current_time())
