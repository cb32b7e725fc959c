"""Queue: the one owner of task state.

It admits tasks into a bounded line, dispatches them to the free engine slots of its pool's
ready replicas as StreamSessions in its own nursery, ends every task exactly once, and
forgets finished tasks after their retention. Everything that changes a task (submit,
cancel, a session's end, the replica's readiness, shutdown) arrives as a message on its
inbox (:mod:`orchestra.actors.queue_messages`) and is applied by its run loop in one
synchronous step, so there is nothing to lock. Its policies are pure helpers in
:mod:`orchestra.scheduling`: the pool's refusals (:class:`~orchestra.pool.PoolStatus`),
admission checks, cuts, preemption, estimates, the replicas' room. What others call
(requests, waits, snapshots) is its face, :class:`~orchestra.actors.queue_face.QueueFace`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

import attrs
import trio

from orchestra.actors import queue_messages as msg
from orchestra.actors.queue_face import QueueFace
from orchestra.actors.queue_messages import Admitted, CancelReason, QueueMsg, ReplicaLink
from orchestra.actors.stream_session import StreamSession
from orchestra.artifacts import ArtifactStore
from orchestra.config import SessionsConfig
from orchestra.engine.protocol import Engine
from orchestra.errors import ErrorCode, Refusal
from orchestra.events import EventKind, EventLog
from orchestra.messages import (
    Completed,
    Doorbell,
    EngineAlarm,
    Failed,
    Interrupted,
    Outcome,
)
from orchestra.obs.metrics import Metrics
from orchestra.obs.tracing import TaskTrace
from orchestra.pool import PoolState, PoolStatus, ReplicaState, Residency
from orchestra.scheduling import admission_checks, preemption
from orchestra.scheduling.cuts import Cut, Cuts
from orchestra.scheduling.figures import QueueFigures, log_limit
from orchestra.scheduling.progress import Progress
from orchestra.scheduling.record import Task
from orchestra.scheduling.replicas import ReplicaBook
from orchestra.scheduling.running import Running
from orchestra.scheduling.sessions import SessionBook, SessionView
from orchestra.scheduling.table import TaskTable
from orchestra.scheduling.waiting import WaitingLine
from orchestra.task import Priority, TaskRequest, TaskState

log = logging.getLogger("orchestra.queue")

MAX_ATTEMPTS = 3
"""Dispatches of one task: an engine failure before its first token puts it back at the
head of the queue, up to this many times in all (preemptions do not count)."""
LOST_STREAM = "lost its connection to the engine mid-stream; probing it"
"""The pool's detail between a stream that lost the engine and the supervisor's answer."""
_CANCELLED = {
    "client": "cancelled by the client",
    "orphaned": "cancelled: every reader left and none came back in time",
    "shutdown": "cancelled: orchestra is shutting down",
    "session": "cancelled: its session was deleted",
    "unload": "cancelled: its model was unloaded by force",
}


def _flag(event: trio.Event, value: bool) -> trio.Event:
    """``event`` set when ``value`` holds; a fresh unset event when it stops holding."""
    if value and not event.is_set():
        event.set()
    elif not value and event.is_set():
        return trio.Event()
    return event


@attrs.define
class Queue(QueueFace):
    """The one writer of task state: bounded line, dispatch, cancel, retention.

    Owns: every :class:`Task`, the waiting line, the pool's status and its replicas'
    (:class:`~orchestra.scheduling.replicas.ReplicaBook`), the sessions nursery and each
    session's cancel scope. Receives: :data:`QueueMsg` on a bounded inbox.
    Promises: at most ``capacity`` admitted tasks wait and at most each ready replica's
    slots (plus ``engine_backlog``) run there; nothing is dispatched to a replica that is
    not ready; a replica's loss ends or requeues its own tasks only; interactive before
    batch, batch never starved, and no interactive task waits behind a batch task that
    has sent no token; every task ends exactly once, with its log closed in the same step
    as its state changes. A cancel marks the task, closes its log and cancels its
    session's scope in one step, so no token follows it. Cancelling :meth:`run` cancels
    every session with it.
    """

    capacity: int
    retention_s: float
    orphan_grace_s: float
    replicas: tuple[ReplicaLink, ...] = ()
    """The pool's replicas: the engine each streams from and its supervisor's alarm, raised
    when a session could not reach that engine or lost it (its supervisor probes at once),
    or when it went silent mid-stream (an owning supervisor restarts it). Empty: the one
    replica of ``engine`` and ``alarm``."""
    engine: Engine | None = attrs.field(default=None, kw_only=True)
    """The engine of a pool of one replica (when ``replicas`` is not given)."""
    alarm: EngineAlarm = attrs.field(factory=EngineAlarm, kw_only=True)
    """The alarm of that one replica."""
    engine_backlog: int = 0
    """Tasks dispatched beyond the engine's slots. They wait in the engine's own queue, so
    a slot that frees starts the next task within the same engine step instead of a round
    trip later; such a task stays cancellable (closing its connection drops it there)."""
    figures: QueueFigures = attrs.field(factory=QueueFigures)
    """What it learned from the tasks it served, and the predictions it makes from that."""
    metrics: Metrics = attrs.field(factory=Metrics)
    """Told of each task's first dispatch, first token (completed tasks) and end."""
    batch_capacity: int | None = None
    """Batch tasks that may wait (their own limit); None: the same as ``capacity``, which
    then bounds the interactive ones."""
    batch_every: int = 4
    """While batch tasks wait, at least one dispatch in every ``batch_every`` is a batch one."""
    sessions: SessionBook = attrs.field(factory=lambda: SessionBook(SessionsConfig()))
    """Sessions: their slots, turns and budgets (:mod:`orchestra.scheduling.sessions`)."""
    pool_id: str = "default"
    """The pool it is the line of; the ``model`` label of its metrics."""
    doorbell: Doorbell = attrs.field(factory=Doorbell)
    """Rung when a task waits for its model's load and when the pool falls idle, so the
    Models actor plans again."""
    residency: Residency = Residency.LOADED
    """Its model's residency at the start (``unloaded`` for a pool loaded on demand)."""
    artifacts: ArtifactStore | None = None
    """Where a task that asks for it keeps its output (:mod:`orchestra.actors.keep_output`)."""
    _table: TaskTable = attrs.field(init=False)
    _waiting: WaitingLine = attrs.field(init=False)
    _cuts: Cuts = attrs.field(factory=Cuts, init=False)
    _running: Running = attrs.field(factory=Running, init=False)
    _pool: PoolStatus = attrs.field(factory=PoolStatus, init=False)
    _replicas: ReplicaBook = attrs.field(init=False)
    _idle: trio.Event = attrs.field(factory=trio.Event, init=False)
    _quiet: trio.Event = attrs.field(factory=trio.Event, init=False)
    """Set while no session runs."""
    _pool_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _replica_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _sessions: trio.Nursery | None = attrs.field(default=None, init=False)
    _idle_since: float | None = attrs.field(default=None, init=False)
    _last_used: float = attrs.field(default=0.0, init=False)
    """0: never used."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not self.replicas:
            if self.engine is None:
                raise TypeError("a Queue needs replicas, or the engine of its one replica")
            self.replicas = (ReplicaLink(f"{self.pool_id}/0", self.engine, self.alarm),)
        self._replicas = ReplicaBook(tuple(r.id for r in self.replicas), self.engine_backlog)
        self._waiting = WaitingLine(self.batch_every)
        self._table = TaskTable(self.retention_s)
        self._idle.set()
        self._quiet.set()
        self._pool = PoolStatus(residency=self.residency, pool_id=self.pool_id)

    # -- the actor ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply messages until cancelled; ready as soon as it is receiving."""
        async with trio.open_nursery() as sessions:
            self._sessions = sessions
            self._idle_since = trio.current_time()
            task_status.started()
            while True:
                message: QueueMsg | None = None
                wake = min(
                    self._table.next_expiry(), self._cuts.next_at(), self.sessions.next_expiry()
                )
                with trio.move_on_at(wake):
                    message = await self._inbox_out.receive()
                if message is not None:
                    self._apply(message)
                now = trio.current_time()
                self._enforce_cuts(now)
                self._table.expire(now)
                self.sessions.expire(now)
                self._dispatch()
                self._note_idle(now)
                self._quiet = _flag(self._quiet, self._running.busy == 0)

    def _note_idle(self, now: float) -> None:
        idle = not self._waiting and self._running.busy == 0
        if idle != self._idle.is_set():
            self._idle_since = now if idle else None
            self.doorbell.ring()  # an idle pool may be unloaded or evicted
        self._idle = _flag(self._idle, idle)

    def _apply(self, message: QueueMsg) -> None:
        """Apply one message (the run loop then enforces cuts and dispatches)."""
        match message:
            case msg.Submit(request, fingerprint, reply, correlation_id, trace):
                result = self._submit(request, fingerprint, correlation_id, trace)
                if trace is not None and not trace.adopted:
                    if isinstance(result, Refusal):
                        trace.refused(result)
                    else:
                        trace.duplicate(result.task_id)
                reply.send(result)
            case msg.Cancel(task_id, reason, reply):
                state = self._cancel(task_id, reason)
                if reply is not None:
                    reply.send(state)
            case msg.SessionEnded(task, attempt, outcome, replica):
                self._session_ended(task, attempt, outcome, replica)
            case msg.ReplicaChanged(replica, status, reply):
                self._set_replica(replica, status.state, status.detail, status.slots_total)
                if status.slots_total:
                    self.sessions.slots_known(status.slots_total, self.replicas[replica].id)
                reply.send(None)
            case msg.ReplicaLost(replica, code, detail, reply):
                if self._replicas[replica].ready:
                    self._set_replica(replica, ReplicaState.STARTING, detail)
                self._stop_running(code, detail, TaskState.FAILED, self.replicas[replica].id)
                reply.send(None)
            case msg.RefuseNew(reply):
                self._pool = attrs.evolve(self._pool, refusing=True)
                reply.send(None)
            case msg.CancelAll(reason, reply):
                live = self._table.live()
                for task in live:
                    self._cancel(task.id, reason)
                reply.send(len(live))
            case msg.StopRunning(reply):
                why = "cancelled: the pool was drained before the task finished"
                reply.send(self._stop_running(ErrorCode.CANCELLED, why, TaskState.CANCELLED))
            case msg.DeleteSession(session_id, reply):
                reply.send(self._delete_session(session_id))
            case msg.SetDraining(on, reply):
                self._pool = attrs.evolve(self._pool, draining=on)
                reply.send(msg.DrainStart(len(self._running), len(self._waiting)))
            case msg.SetResidency(residency, load_ms, fail_waiting, reply):
                self._set_residency(residency, load_ms, fail_waiting)
                reply.send(None)
            case msg.BeginUnload(mode, reply):
                reply.send(self._begin_unload(mode))
            case msg.Ping(reply):
                reply.send(None)

    # -- state changes (only ever called from the run loop) ------------------------------

    def _submit(
        self,
        request: TaskRequest,
        fingerprint: str,
        correlation_id: str | None = None,
        trace: TaskTrace | None = None,
    ) -> Admitted | Refusal:
        known = self._table.get(request.task_id)
        if known is not None:
            if known.fingerprint != fingerprint:
                return Refusal(
                    ErrorCode.CONFLICT,
                    f"task_id {known.id!r} is already used by a different request",
                )
            return Admitted(known.id, known.queue_position, known.predicted_start_ms)
        priority = request.priority
        full = self._waiting.count(priority) >= admission_checks.capacity_of(
            priority, self.capacity, self.batch_capacity
        )
        refused = self._pool.refusal() or (self.queue_full(priority) if full else None)
        if refused is None and request.session_id is not None:
            refused = self.sessions.refusal(request.session_id)
        if refused is not None:
            return refused
        now = trio.current_time()
        ahead = self._waiting.ahead_of_new(priority)
        predicted_ms = self._predicted_start_ms(self._waiting.order()[:ahead])
        speed = self.figures.tokens_per_s(now) if request.deadline_ms is not None else None
        refused = admission_checks.deadline_unmet(request, predicted_ms, speed, self._retry_ms())
        if refused is not None:
            return refused
        task = Task(
            id=request.task_id or uuid.uuid4().hex,
            request=request,
            fingerprint=fingerprint,
            log=EventLog(limit=log_limit(request)),
            submitted_at=now,
            correlation_id=correlation_id,
            queue_position=ahead,
            predicted_start_ms=predicted_ms,
            trace=trace,
        )
        if trace is not None:
            loading = self._pool.residency is not Residency.LOADED
            trace.admitted(task.id, self.pool_id, waits_for_load=loading)
        self._table.add(task)
        self._waiting.append(task)
        if request.session_id is not None:
            self.sessions.open(request.session_id, task, now, self._replicas.homes())
        if request.deadline_ms is not None:
            self._cuts.add(now + request.deadline_ms / 1000, task, 0, "deadline")
        self._last_used = now
        if self._pool.residency is not Residency.LOADED:
            self.doorbell.ring()  # it waits for a load
        return Admitted(task.id, task.queue_position, task.predicted_start_ms)

    def _enforce_cuts(self, now: float) -> None:
        """End every task whose cut is due; a running one's scope is cancelled with its log
        closed, so no token follows."""
        for task, error in self._cuts.due(now):
            if task.state is TaskState.QUEUED:
                self._waiting.remove(task)
            self._fail(task, error.code, error.message, retriable=error.retriable)
            if task.scope is not None:
                task.scope.cancel()

    def _dispatch(self) -> None:
        if not self._pool.dispatching:
            return
        while self._waiting and (some := self._replicas.choose()) is not None:
            head = self._waiting.peek()
            if head is not None and self._fits(head):
                task: Task | None = self._waiting.popleft()
            else:
                # The head is a session's turn whose replica is full: the first task that
                # can go somewhere goes, and the turn keeps its place.
                task = self._waiting.pop_first(self._fits)
            if task is None:
                break
            home = self._home_of(task)
            self._start(task, some if home is None else home)
        if self._waiting and self._replicas.choose() is None and not self._running.taking_back:
            # An interactive task never waits behind a batch task that has sent nothing:
            # that one keeps its turn at the head of its class, and the room it held goes
            # to the interactive task once its session has closed its stream.
            next_up = self._waiting.next_priority()
            victims = [
                found
                for entry in self._replicas
                if (found := preemption.victim(self._running.on(entry.id), next_up, entry.slots))
            ]
            victim = max(victims, key=lambda t: t.dispatched_seq, default=None)
            if victim is not None:
                self._running.take_back(victim)
                self._waiting.appendleft(victim)
                if victim.trace is not None:
                    victim.trace.preempted(victim.attempts)
                log.info("task %s taken back for an interactive task", victim.id)

    def _home_of(self, task: Task) -> int | None:
        """The replica a session's turn must go to: its session's, while that one is
        ready; None when any replica will do."""
        home = self.sessions.home(task)
        index = None if home is None else self._replicas.index(home)
        if index is None or not self._replicas[index].ready:
            return None
        return index

    def _fits(self, task: Task) -> bool:
        home = self._home_of(task)
        return self._replicas.has_room(home) if home is not None else True

    def _start(self, task: Task, replica: int) -> None:
        assert self._sessions is not None
        now = trio.current_time()
        left = self._waiting.count(Priority.INTERACTIVE)
        self._running.add(task, preemptible=preemption.preemptible_at_dispatch(task, left))
        self._replicas.hold(replica)
        link = self.replicas[replica]
        task.replica = link.id
        assert task.scope is not None
        if task.trace is not None:
            task.trace.dispatched(task.attempts, link.id)
        if task.attempts == 1:
            waited_ms = task.first_dispatch(now)
            self.figures.dispatched(task.predicted_start_ms, waited_ms)
            self.metrics.task_dispatched(
                now - task.submitted_at,
                abs(waited_ms - task.predicted_start_ms) / 1000,
                model=self.pool_id,
            )
        progress = Progress.of(task.request, task.submitted_at, self._waiting.__len__)
        params = self._engine_params(task)
        session = StreamSession(
            link.engine, params, task.log, task.scope, progress, task.request.endpoint
        )
        self._sessions.start_soon(self._run_session, task, task.attempts, session, replica)

    def _engine_params(self, task: Task) -> dict[str, object]:
        """The engine call for a task being dispatched: a session's turn goes to its slot,
        capped by what its budget has left (and cut when its wall time runs out)."""
        params = task.request.engine_params()
        assert task.replica is not None
        busy = self._running.slots_in_use(besides=task)
        turn = self.sessions.turn(task, params, busy, task.replica)
        if turn is None:
            return params
        task.slot, task.token_cap = turn.slot, turn.token_cap
        if turn.wall_left_s is not None:
            assert task.dispatched_at is not None  # the session counts from the first dispatch
            budget: Cut = "budget"
            self._cuts.add(task.dispatched_at + turn.wall_left_s, task, task.attempts, budget)
        return turn.params

    def _session_ended(self, task: Task, attempt: int, outcome: Outcome, replica: int) -> None:
        current = self._running.session_ended(task, attempt)
        self._replicas.release(replica)
        link = self.replicas[replica]
        if isinstance(outcome, Completed):
            self.sessions.slot_used(outcome.slot, task.request.session_id, link.id)
        if not current:
            return  # a dispatch put back or taken back: the task waits again; the room is free
        task.scope = task.slot = None
        if isinstance(outcome, Failed) and (
            outcome.error.unreachable or outcome.error.code is ErrorCode.WORKER_RESET
        ):
            # The engine may have died: nothing more goes to that replica (and when it was
            # the last ready one, admission refuses and health says so) until its
            # supervisor has probed it.
            if self._replicas[replica].ready:
                detail = outcome.error.message if outcome.error.unreachable else LOST_STREAM
                self._set_replica(replica, ReplicaState.STARTING, detail)
            link.alarm.suspect(outcome.error.message)
        if task.state is not TaskState.RUNNING:
            return  # cancelled while running: already ended; the slot is free now
        match outcome:
            case Completed() as completed:
                self._completed(task, completed)
            case Failed(error, tokens_sent):
                if error.code is ErrorCode.DECODE_TIMEOUT:
                    link.alarm.hung(error.message)
                if tokens_sent == 0 and error.retriable and task.counted_attempts < MAX_ATTEMPTS:
                    self._running.put_back(task)
                    self._waiting.appendleft(task)  # it keeps its turn
                    if task.trace is not None:
                        task.trace.requeued(error.code, error.message, task.attempts)
                    return
                self._fail(task, error.code, error.message, retriable=error.retriable)
            case Interrupted():
                self._fail(task, ErrorCode.INTERNAL, "session interrupted", retriable=True)

    def _completed(self, task: Task, done: Completed) -> None:
        ttft_s = self.figures.completed(trio.current_time(), task, done)
        if ttft_s is not None:
            self.metrics.first_token(ttft_s, model=self.pool_id)
        end = task.record_completion(done)
        if task.trace is not None:
            task.trace.completed(done)
        if task.token_cap is not None and done.stop_type == "limit":
            message = f"the session's token budget ran out after {done.tokens_out} tokens"
            self._fail(task, ErrorCode.BUDGET_EXCEEDED, message, retriable=False)
            return
        self._end(task, TaskState.COMPLETED, EventKind.END, end)

    def _stop_running(
        self, code: ErrorCode, detail: str, state: TaskState, replica: str | None = None
    ) -> tuple[int, int]:
        """Stop every running task (on ``replica`` only, when given): requeue (in their
        order, at the head) those that have not sent a token and may try again; end the
        others with ``code`` in ``state``. Returns how many were requeued and ended."""
        running = list(self._running) if replica is None else self._running.on(replica)
        requeue = []
        for task in running:
            assert task.scope is not None
            task.scope.cancel()
            if task.log.tokens == 0 and task.counted_attempts < MAX_ATTEMPTS:
                self._running.put_back(task)
                requeue.append(task)
                if task.trace is not None:
                    task.trace.requeued(code, detail, task.attempts)
            else:
                task.scope = task.slot = None
                self._fail(task, code, detail, retriable=True, state=state)
        self._waiting.extendleft(reversed(requeue))
        return len(requeue), len(running) - len(requeue)

    def _set_residency(
        self, residency: Residency, load_ms: int, fail_waiting: tuple[ErrorCode, str] | None
    ) -> None:
        if residency is not Residency.LOADED:  # the engines' last word no longer holds
            for index in range(len(self._replicas)):
                self._set_replica(index, ReplicaState.STARTING, f"the model is {residency}")
        self._pool = attrs.evolve(self._pool, residency=residency, load_ms=load_ms)
        if residency is Residency.LOADED:
            for waiting in self._waiting.order():
                if waiting.trace is not None:
                    waiting.trace.loaded()
        self._pool_changed.set()
        self._pool_changed = trio.Event()
        self._replica_changed.set()  # a replica's view shows the pool's residency
        self._replica_changed = trio.Event()
        if fail_waiting is not None:
            code, message = fail_waiting
            while self._waiting:
                self._fail(self._waiting.popleft(), code, message, retriable=True)

    def _begin_unload(self, mode: msg.UnloadMode) -> tuple[bool, int]:
        busy = bool(self._waiting) or self._running.busy > 0
        if mode == "idle" and busy:
            return False, 0
        self._set_residency(Residency.UNLOADING, self._pool.load_ms, None)
        cancelled = 0
        if mode == "force":
            for task in list(self._running):
                self._cancel(task.id, "unload")
                cancelled += 1
        return True, cancelled

    def _set_replica(
        self, index: int, state: ReplicaState, detail: str, slots: int | None = None
    ) -> None:
        """Replica ``index`` is now in ``state``; the pool's state follows from all of them."""
        if self._replicas.report(index, state, detail, slots):
            # It may come back with its KV cache empty.
            self.sessions.engine_restarted(self.replicas[index].id)
        self._replica_changed.set()
        self._replica_changed = trio.Event()
        self._set_pool(*self._replicas.pool_state())

    def _set_pool(self, state: PoolState, detail: str) -> None:
        changed = state is not self._pool.state
        self._pool = attrs.evolve(self._pool, state=state, detail=detail)
        if changed:
            self._pool_changed.set()
            self._pool_changed = trio.Event()

    def _cancel(self, task_id: str, reason: CancelReason) -> TaskState | None:
        task = self._table.get(task_id)
        if task is None:
            return None
        if task.state.terminal:
            return task.state
        if task.state is TaskState.QUEUED:
            self._waiting.remove(task)
        retriable, cancelled = reason == "shutdown", TaskState.CANCELLED
        self._fail(
            task, ErrorCode.CANCELLED, _CANCELLED[reason], retriable=retriable, state=cancelled
        )
        if task.scope is not None:
            task.scope.cancel()
        return TaskState.CANCELLED

    def _fail(
        self,
        task: Task,
        code: ErrorCode,
        message: str,
        *,
        retriable: bool,
        state: TaskState = TaskState.FAILED,
    ) -> None:
        task.error_code = code
        data = {"code": str(code), "retriable": retriable, "message": message}
        self._end(task, state, EventKind.ERROR, data)

    def _end(
        self, task: Task, state: TaskState, kind: EventKind, data: Mapping[str, object]
    ) -> None:
        """The one place a task ends: state and log change together."""
        now = trio.current_time()
        self._running.leave(task)
        self._table.end(task, state, kind, data, now)
        self._last_used = now
        tokens_out = task.tokens_out or task.log.tokens
        self.metrics.task_ended(
            state, task.error_code, tokens_out, task.request.face, model=self.pool_id,
            replica=task.replica,
        )  # fmt: skip
        self.sessions.turn_ended(task, now, tokens_out)
        if task.trace is not None:
            message = str(data.get("message", ""))
            task.trace.end(
                state, task.error_code, message, tokens_out=tokens_out, attempts=task.attempts
            )
        log.info("task %s %s", task.id, state, extra={**task.log_fields(), "pool_id": self.pool_id})

    def _delete_session(self, session_id: str) -> tuple[SessionView, tuple[int, int] | None] | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        view = self.sessions.view(session, trio.current_time())
        erase = None
        index = self._replicas.index(session.replica)
        if self.sessions.kv_warm(session) and index is not None:
            erase = (index, session.slot)
        if session.live is not None:
            self._cancel(session.live.id, "session")
        self.sessions.delete(session_id)
        return view, erase
