"""Queue: the one owner of task state.

It admits tasks into a bounded FIFO, dispatches them to free engine slots as StreamSessions
in its own nursery, ends every task exactly once, and forgets finished tasks after their
retention. Everything that changes a task (submit, cancel, a session's end, the replica's
readiness, shutdown) arrives as a message on its inbox and is applied by its run loop in
one synchronous step, so there is nothing to lock.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Literal

import attrs
import trio

from . import logs
from .adapter import Engine
from .config import SessionsConfig
from .errors import ApiError, EngineError, ErrorCode
from .estimate import PredictionErrors, ServiceRate, WorkModel, predicted_start_s
from .events import EventKind, EventLog
from .metrics import Metrics
from .oneshot import Reply
from .progress import Progress, max_frames
from .session import Completed, Failed, Interrupted, Outcome, StreamSession
from .sessions import SessionBook, SessionView
from .slo import Sample, SloWindow
from .task import Priority, Task, TaskRequest, TaskState
from .waiting import WaitingLine

log = logging.getLogger("orchestra.queue")

INBOX_SIZE = 64
"""Messages the Queue's inbox holds; a submission finding it full is refused with 429."""
MAX_ATTEMPTS = 3
"""Dispatches of one task: an engine failure before its first token puts it back at the
head of the queue, up to this many times in all."""
LOG_EXTRA = 4
"""Events beyond ``max_tokens`` a task's log holds (``started``, the end, and slack); a
task that asked for ``metrics`` events gets room for every one it can get on top."""

CancelReason = Literal["client", "orphaned", "shutdown", "session"]
Cut = Literal["deadline", "budget"]
"""Why a task is ended at a set time: its deadline, or its session's wall-time budget."""


# -- messages ----------------------------------------------------------------------------


@attrs.frozen
class Admitted:
    """The Queue's answer to an accepted submission (the 202 body)."""

    task_id: str
    queue_position: int
    predicted_start_ms: int


@attrs.frozen
class Submit:
    """Admit a validated request; answered with Admitted or the ApiError to return."""

    request: TaskRequest
    fingerprint: str
    reply: Reply[Admitted | ApiError]
    correlation_id: str | None = None


@attrs.frozen
class DeleteSession:
    """Forget a session, cancelling its task in progress; answered with the session as it
    was and the slot whose cache to erase (None when the slot holds someone else's), or
    None when the session is unknown."""

    session_id: str
    reply: Reply[tuple[SessionView, int | None] | None]


@attrs.frozen
class Cancel:
    """Cancel a task; answered with its state afterwards, or None when it is unknown."""

    task_id: str
    reason: CancelReason
    reply: Reply[TaskState | None] | None


@attrs.frozen
class SessionEnded:
    """A StreamSession returned; its engine connection is closed and its slot is free.

    ``attempt`` says which dispatch of the task it ran: a session of an earlier attempt
    (one the replica lost) only frees its slot.
    """

    task: Task
    attempt: int
    outcome: Outcome


class PoolState(enum.StrEnum):
    """Whether the replica can take work, as the supervisor sees it."""

    READY = "ready"
    STARTING = "starting"
    """Loading, restarting, or not answering: 503 ``POOL_UNREADY``, come back soon."""
    UNAVAILABLE = "unavailable"
    """Crashed past its limit: 503 ``POOL_UNAVAILABLE`` until it recovers."""


@attrs.frozen
class ReplicaStatus:
    """The replica's state and slot count, from the ReplicaSupervisor."""

    state: PoolState
    slots_total: int
    detail: str


@attrs.frozen
class ReplicaLost:
    """The engine process died or hung: every running task is requeued (no token yet) or
    ended with ``code`` (``WORKER_RESET`` or ``DECODE_TIMEOUT``); answered once applied."""

    code: ErrorCode
    detail: str
    reply: Reply[None]


@attrs.frozen
class ReplicaChanged:
    """Apply a new :class:`ReplicaStatus`; answered once it is applied."""

    status: ReplicaStatus
    reply: Reply[None]


@attrs.frozen
class RefuseNew:
    """Shutdown has begun: refuse submissions from now on (503)."""

    reply: Reply[None]


@attrs.frozen
class CancelAll:
    """Cancel every task that has not ended."""

    reason: CancelReason
    reply: Reply[int]


@attrs.frozen
class StopRunning:
    """A drain's deadline passed: every running task without a token goes back to the head
    of the queue, the others are cancelled; answered with (requeued, cancelled)."""

    reply: Reply[tuple[int, int]]


@attrs.frozen
class DrainStart:
    """What a drain found when it began: tasks running and tasks waiting."""

    running: int
    queued: int


@attrs.frozen
class SetDraining:
    """Start (``on``) or end a drain: while draining, nothing is dispatched and new
    submissions get 503 ``POOL_UNREADY``; waiting tasks keep their place."""

    on: bool
    reply: Reply[DrainStart]


QueueMsg = (
    Submit | Cancel | SessionEnded | ReplicaChanged | ReplicaLost | RefuseNew | CancelAll
    | SetDraining | StopRunning | DeleteSession
)  # fmt: skip


# -- read-only views ---------------------------------------------------------------------


@attrs.frozen
class TaskView:
    """A snapshot of one task for ``GET /v1/tasks/{id}``."""

    task_id: str
    state: TaskState
    queue_position: int | None
    predicted_start_ms: int | None
    tokens_out: int
    attempts: int
    error_code: str | None
    queue_wait_ms: int | None
    run_ms: int | None


@attrs.frozen
class QueueStatistics:
    """A snapshot of the Queue for health and metrics."""

    ready: bool
    pool_state: PoolState
    refusing: bool
    """Shutting down: submissions get 503."""
    draining: bool
    """Drained through the control plane: nothing is dispatched, submissions get 503."""
    replica_detail: str
    queue_depth: int
    queue_capacity: int
    slots_total: int
    slots_busy: int
    tasks_known: int
    mean_service_ms: int
    ended: Mapping[str, int]

    @property
    def serving(self) -> bool:
        """Ready and not draining: a submission would be admitted (room permitting)."""
        return self.ready and not (self.refusing or self.draining)

    @property
    def state(self) -> str:
        """``ready``, ``starting``, ``unavailable`` or ``draining``, as health reports it."""
        return "draining" if self.refusing or self.draining else str(self.pool_state)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _log_limit(request: TaskRequest) -> int:
    """Room for every event of a task: its tokens, ``started``, its ``metrics`` events."""
    frames = max_frames(request.max_tokens) if request.metrics else 0
    return request.max_tokens + LOG_EXTRA + frames


def _flag(event: trio.Event, value: bool) -> trio.Event:
    """``event`` set when ``value`` holds; a fresh unset event when it stops holding."""
    if value and not event.is_set():
        event.set()
    elif not value and event.is_set():
        return trio.Event()
    return event


@attrs.define
class Queue:
    """The one writer of task state: bounded FIFO, dispatch, cancel, retention.

    Owns: every :class:`Task`, the waiting line, the sessions nursery and each session's
    cancel scope. Receives: :data:`QueueMsg` on a bounded inbox (``INBOX_SIZE``).
    Promises: at most ``capacity`` admitted tasks wait and at most ``slots_total`` run;
    dispatch is FIFO; every task ends exactly once, with its log closed in the same step
    as its state changes. A cancel marks the task, closes its log and cancels its
    session's scope in one step, so no token follows it. Cancelling :meth:`run` cancels
    every session with it.
    """

    capacity: int
    engine: Engine
    retention_s: float
    orphan_grace_s: float
    on_engine_suspect: Callable[[str], None] = lambda detail: None
    """Called when a session could not reach the engine or lost its connection to it (the
    supervisor probes at once)."""
    on_engine_hung: Callable[[str], None] = lambda detail: None
    """Called when the engine went silent mid-stream (an owning supervisor restarts it)."""
    engine_backlog: int = 0
    """Tasks dispatched beyond the engine's slots. They wait in the engine's own queue, so
    a slot that frees starts the next task within the same engine step instead of a round
    trip later; such a task stays cancellable (closing its connection drops it there)."""
    rate: ServiceRate = attrs.field(factory=ServiceRate)
    work: WorkModel = attrs.field(factory=WorkModel)
    """How long a task holds a slot, for ``predicted_start_ms``."""
    prediction: PredictionErrors = attrs.field(factory=PredictionErrors)
    """How far each task's ``predicted_start_ms`` was from its real wait."""
    slo: SloWindow = attrs.field(factory=SloWindow)
    """Time to first token and decode speed of the tasks completed lately."""
    metrics: Metrics = attrs.field(factory=Metrics)
    """Told of each task's first dispatch, first token (completed tasks) and end."""
    batch_capacity: int | None = None
    """Batch tasks that may wait (their own limit); None: the same as ``capacity``, which
    then bounds the interactive ones."""
    batch_every: int = 4
    """While batch tasks wait, at least one dispatch in every ``batch_every`` is a batch one."""
    sessions: SessionBook = attrs.field(factory=lambda: SessionBook(SessionsConfig()))
    """Sessions: their slots, turns and budgets (:mod:`orchestra.sessions`)."""
    _inbox: trio.MemorySendChannel[QueueMsg] = attrs.field(init=False)
    _inbox_out: trio.MemoryReceiveChannel[QueueMsg] = attrs.field(init=False)
    _tasks: dict[str, Task] = attrs.field(factory=dict, init=False)
    _waiting: WaitingLine = attrs.field(init=False)
    _cuts: list[tuple[float, int, Task, int, Cut]] = attrs.field(factory=list, init=False)
    """A heap of (when, sequence number, task, attempt, why) of the tasks to end at a set
    time: at their deadline (attempt 0: whatever the attempt), or when their session's
    wall-time budget runs out (that attempt only)."""
    _cut_seq: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _busy: int = attrs.field(default=0, init=False)
    _running: dict[str, Task] = attrs.field(factory=dict, init=False)
    """The tasks in the RUNNING state, in dispatch order."""
    _pool: PoolState = attrs.field(default=PoolState.STARTING, init=False)
    _probe_pending: bool = attrs.field(default=False, init=False)
    """A stream lost its engine connection: hold dispatch until the next replica report."""
    _slots_total: int = attrs.field(default=0, init=False)
    _replica_detail: str = attrs.field(default="not probed yet", init=False)
    _refusing: bool = attrs.field(default=False, init=False)
    _draining: bool = attrs.field(default=False, init=False)
    _expiry: deque[tuple[float, Task]] = attrs.field(factory=deque, init=False)
    _idle: trio.Event = attrs.field(factory=trio.Event, init=False)
    _quiet: trio.Event = attrs.field(factory=trio.Event, init=False)
    """Set while no session runs."""
    _pool_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _sessions: trio.Nursery | None = attrs.field(default=None, init=False)
    _ended: Counter[str] = attrs.field(factory=Counter, init=False)

    def __attrs_post_init__(self) -> None:
        self._waiting = WaitingLine(self.batch_every)
        self._inbox, self._inbox_out = trio.open_memory_channel[QueueMsg](INBOX_SIZE)
        self._idle.set()
        self._quiet.set()

    # -- the actor ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply messages until cancelled; ready as soon as it is receiving."""
        async with trio.open_nursery() as sessions:
            self._sessions = sessions
            task_status.started()
            while True:
                message: QueueMsg | None = None
                wake = min(self._next_expiry(), self._next_cut(), self.sessions.next_expiry())
                with trio.move_on_at(wake):
                    message = await self._inbox_out.receive()
                if message is not None:
                    self._apply(message)
                now = trio.current_time()
                self._enforce_cuts(now)
                self._expire(now)
                self.sessions.expire(now)
                self._update_idle()

    def _apply(self, message: QueueMsg) -> None:
        match message:
            case Submit(request, fingerprint, reply, correlation_id):
                reply.send(self._submit(request, fingerprint, correlation_id))
            case Cancel(task_id, reason, reply):
                state = self._cancel(task_id, reason)
                if reply is not None:
                    reply.send(state)
            case SessionEnded(task, attempt, outcome):
                self._session_ended(task, attempt, outcome)
            case ReplicaChanged(status, reply):
                self._probe_pending = False
                self._set_pool(status.state, status.detail)
                self._slots_total = status.slots_total
                if status.slots_total:
                    self.sessions.slots_known(status.slots_total)
                reply.send(None)
            case ReplicaLost(code, detail, reply):
                self._replica_lost(code, detail)
                reply.send(None)
            case RefuseNew(reply):
                self._refusing = True
                reply.send(None)
            case CancelAll(reason, reply):
                live = [t.id for t in self._tasks.values() if not t.state.terminal]
                for task_id in live:
                    self._cancel(task_id, reason)
                reply.send(len(live))
            case StopRunning(reply):
                reply.send(
                    self._stop_running(
                        ErrorCode.CANCELLED,
                        "cancelled: the pool was drained before the task finished",
                        TaskState.CANCELLED,
                    )
                )
            case DeleteSession(session_id, reply):
                reply.send(self._delete_session(session_id))
            case SetDraining(on, reply):
                self._draining = on
                running = sum(t.state is TaskState.RUNNING for t in self._tasks.values())
                reply.send(DrainStart(running, len(self._waiting)))
        self._dispatch()

    # -- state changes (only ever called from _apply) ------------------------------------

    def _submit(
        self, request: TaskRequest, fingerprint: str, correlation_id: str | None = None
    ) -> Admitted | ApiError:
        known = self._tasks.get(request.task_id) if request.task_id else None
        if known is not None:
            if known.fingerprint != fingerprint:
                return ApiError(
                    ErrorCode.CONFLICT,
                    f"task_id {known.id!r} is already used by a different request",
                )
            return Admitted(known.id, known.queue_position, known.predicted_start_ms)
        if self._refusing:
            return ApiError(
                ErrorCode.POOL_UNREADY, "orchestra is shutting down", retriable=True,
                retry_after_ms=5000,
            )  # fmt: skip
        if self._pool is PoolState.UNAVAILABLE:
            return ApiError(
                ErrorCode.POOL_UNAVAILABLE,
                f"the engine is unavailable: {self._replica_detail}",
                retriable=True,
                retry_after_ms=30_000,
            )
        if self._draining:
            return ApiError(
                ErrorCode.POOL_UNREADY,
                "the pool is drained (POST /v1/pools/default/resume ends the drain)",
                retriable=True,
                retry_after_ms=5000,
            )
        if self._pool is not PoolState.READY:
            return ApiError(
                ErrorCode.POOL_UNREADY,
                f"the engine is not ready: {self._replica_detail}",
                retriable=True,
                retry_after_ms=1000,
            )
        priority = request.priority
        if self._waiting.count(priority) >= self._capacity_of(priority):
            return self._queue_full(priority)
        if request.session_id is not None:
            refusal = self.sessions.refusal(request.session_id)
            if refusal is not None:
                return refusal
        now = trio.current_time()
        ahead = self._waiting.ahead_of_new(priority)
        predicted_start_ms = self._predicted_start_ms(self._waiting.order()[:ahead])
        if request.deadline_ms is not None:
            missed = self._deadline_missed(request, predicted_start_ms, now)
            if missed is not None:
                return missed
        task = Task(
            id=request.task_id or uuid.uuid4().hex,
            request=request,
            fingerprint=fingerprint,
            log=EventLog(limit=_log_limit(request)),
            submitted_at=now,
            correlation_id=correlation_id,
            queue_position=ahead,
            predicted_start_ms=predicted_start_ms,
        )
        self._tasks[task.id] = task
        self._waiting.append(task)
        if request.session_id is not None:
            self.sessions.open(request.session_id, task, now, self._slots_total)
        if request.deadline_ms is not None:
            self._cut_at(now + request.deadline_ms / 1000, task, 0, "deadline")
        return Admitted(task.id, task.queue_position, task.predicted_start_ms)

    def _predicted_start_ms(self, ahead: list[Task]) -> int:
        """When a task behind ``ahead`` will be dispatched (:func:`predicted_start_s`)."""
        running_left = [
            self.work.remaining_s(t.token_cap or t.request.max_tokens, t.log.tokens)
            for t in self._running.values()
        ]
        waiting = [self.work.expected_s(t.request.max_tokens) for t in ahead]
        backlog = self.engine_backlog if self._slots_total else 0
        start_s = predicted_start_s(running_left, waiting, slots=self._slots_total, backlog=backlog)
        return round(start_s * 1000)

    def _capacity_of(self, priority: Priority) -> int:
        if priority is Priority.BATCH and self.batch_capacity is not None:
            return self.batch_capacity
        return self.capacity

    def _queue_full(self, priority: Priority = Priority.INTERACTIVE) -> ApiError:
        retry_ms = self.rate.retry_after_ms(slots_total=self._slots_total)
        capacity = self._capacity_of(priority)
        batch = priority is Priority.BATCH and self.batch_capacity is not None
        return ApiError(
            ErrorCode.ADMISSION_REJECT,
            f"the {'batch ' if batch else ''}queue is full ({capacity} tasks waiting); "
            f"retry in {retry_ms} ms",
            retriable=True,
            retry_after_ms=retry_ms,
            policy_label="batch_queue_capacity" if batch else "queue_capacity",
            headers={
                "Retry-After": str(max(1, -(-retry_ms // 1000))),
                "X-Backoff-Ms": str(retry_ms),
            },
        )

    def _deadline_missed(
        self, request: TaskRequest, predicted_start_ms: int, now: float
    ) -> ApiError | None:
        """DEADLINE_UNMET when the task is predicted to end after its deadline: it starts
        in ``predicted_start_ms`` and, once the decode speed is known, takes ``max_tokens``
        at that speed (the worst case: it may stop sooner)."""
        assert request.deadline_ms is not None
        run_ms = 0
        speed = self.slo.snapshot(now).tokens_per_s
        if speed:
            run_ms = round(request.max_tokens / speed * 1000)
        if predicted_start_ms + run_ms <= request.deadline_ms:
            return None
        return ApiError(
            ErrorCode.DEADLINE_UNMET,
            f"the deadline ({request.deadline_ms} ms) cannot be met: the task is predicted to "
            f"start in {predicted_start_ms} ms and to need up to {run_ms} ms for "
            f"{request.max_tokens} tokens",
            retriable=True,
            retry_after_ms=self.rate.retry_after_ms(slots_total=self._slots_total),
            policy_label="deadline",
        )

    def _cut_at(self, when: float, task: Task, attempt: int, why: Cut) -> None:
        heapq.heappush(self._cuts, (when, next(self._cut_seq), task, attempt, why))

    def _next_cut(self) -> float:
        return self._cuts[0][0] if self._cuts else float("inf")

    def _enforce_cuts(self, now: float) -> None:
        """End every task whose deadline has passed (a waiting one leaves the line) and
        every running one whose session's wall time ran out. A running task is cut: its
        scope is cancelled with its log closed, so no token follows."""
        while self._cuts and self._cuts[0][0] <= now:
            _, _, task, attempt, why = heapq.heappop(self._cuts)
            if task.state.terminal:
                continue
            if why == "budget":
                if task.state is not TaskState.RUNNING or task.attempts != attempt:
                    continue  # requeued since: its next dispatch set a cut of its own
                code, retriable = ErrorCode.BUDGET_EXCEEDED, False
                message = f"the session's wall-time budget ran out after {task.log.tokens} tokens"
            elif task.state is TaskState.QUEUED:
                self._waiting.remove(task)
                code, retriable = ErrorCode.DEADLINE_UNMET, True
                message = (
                    f"the deadline ({task.request.deadline_ms} ms) passed before the task started"
                )
            else:
                code, retriable = ErrorCode.DEADLINE_UNMET, True
                message = (
                    f"the deadline ({task.request.deadline_ms} ms) passed after "
                    f"{task.log.tokens} tokens"
                )
            self._fail(task, code, message, retriable=retriable)
            if task.scope is not None:
                task.scope.cancel()

    def _dispatch(self) -> None:
        while (
            self._pool is PoolState.READY
            and not self._probe_pending
            and not self._draining
            and self._busy < self._slots_total + (self.engine_backlog if self._slots_total else 0)
            and self._waiting
        ):
            self._start(self._waiting.popleft())

    def _start(self, task: Task) -> None:
        assert self._sessions is not None
        now = trio.current_time()
        task.state = TaskState.RUNNING
        self._running[task.id] = task
        task.attempts += 1
        task.scope = trio.CancelScope()
        self._busy += 1
        if task.attempts == 1:
            task.dispatched_at = now
            waited_ms = _ms(now - task.submitted_at)
            self.prediction.observe(task.predicted_start_ms, waited_ms)
            self.metrics.task_dispatched(
                now - task.submitted_at, abs(waited_ms - task.predicted_start_ms) / 1000
            )
            task.log.append(
                EventKind.STARTED,
                {
                    "queue_position": task.queue_position,
                    "predicted_start_ms": task.predicted_start_ms,
                    "queue_wait_ms": _ms(now - task.submitted_at),
                },
            )
        session = StreamSession(
            self.engine, self._engine_params(task), task.log, task.scope, self._progress(task)
        )
        self._sessions.start_soon(self._run_session, task, task.attempts, session)

    def _engine_params(self, task: Task) -> dict[str, object]:
        """The engine call for a task being dispatched: a session's turn goes to its slot,
        capped by what its budget has left (and cut when its wall time runs out)."""
        params = task.request.engine_params()
        session_id = task.request.session_id
        session = None if session_id is None else self.sessions.get(session_id)
        if session is None or session.live is not task:
            return params
        busy = {t.slot for t in self._running.values() if t.slot is not None and t is not task}
        params, task.token_cap = self.sessions.engine_params(session, params, busy)
        task.slot = session.slot
        wall_left = self.sessions.left(session).wall_s
        if wall_left is not None:
            assert task.dispatched_at is not None  # the session counts from the first dispatch
            self._cut_at(task.dispatched_at + wall_left, task, task.attempts, "budget")
        return params

    def _progress(self, task: Task) -> Progress | None:
        """What tells the session when a ``metrics`` event is due, if the task wants them."""
        request = task.request
        if not request.metrics:
            return None
        deadline_at = None
        if request.deadline_ms is not None:
            deadline_at = task.submitted_at + request.deadline_ms / 1000
        return Progress(request.max_tokens, deadline_at, lambda: len(self._waiting))

    def _session_ended(self, task: Task, attempt: int, outcome: Outcome) -> None:
        self._busy -= 1
        if isinstance(outcome, Completed):
            self.sessions.slot_used(outcome.slot, task.request.session_id)
        if attempt != task.attempts:
            return  # a session of a lost replica: the task was requeued; the slot is free
        task.scope = None
        task.slot = None
        if isinstance(outcome, Failed) and outcome.error.unreachable:
            if self._pool is PoolState.READY:
                self._set_pool(PoolState.STARTING, outcome.error.message)
            self.on_engine_suspect(outcome.error.message)
        elif isinstance(outcome, Failed) and outcome.error.code is ErrorCode.WORKER_RESET:
            # The engine may have died: dispatch nothing (but keep admitting) until the
            # supervisor has probed it, so a requeued task is not sent to a dead engine.
            self._probe_pending = True
            self.on_engine_suspect(outcome.error.message)
        if task.state is not TaskState.RUNNING:
            return  # cancelled or lost while running: already ended; the slot is free now
        if isinstance(outcome, Failed) and outcome.error.code is ErrorCode.DECODE_TIMEOUT:
            self.on_engine_hung(outcome.error.message)
        match outcome:
            case Completed(
                tokens_out, decode_time_ms, first_token_at, tokens_in, cached, slot, stop_type
            ) as completed:
                assert task.dispatched_at is not None
                now = trio.current_time()
                self.rate.observe(now - task.dispatched_at)
                self.work.observe(
                    prompt_s=completed.prompt_time_ms / 1000,
                    decode_s=decode_time_ms / 1000,
                    tokens_out=tokens_out,
                    max_tokens=task.token_cap or task.request.max_tokens,
                )
                if first_token_at is not None:
                    ttft_s = first_token_at - task.submitted_at
                    self.slo.observe(Sample(now, ttft_s, tokens_out, decode_time_ms / 1000))
                    self.metrics.first_token(ttft_s)
                task.tokens_out, task.tokens_in = tokens_out, tokens_in
                task.decode_time_ms = round(decode_time_ms, 3)
                task.cached_tokens, task.ran_on = cached, slot
                if task.token_cap is not None and stop_type == "limit":
                    self._fail(
                        task,
                        ErrorCode.BUDGET_EXCEEDED,
                        f"the session's token budget ran out after {tokens_out} tokens",
                        retriable=False,
                    )
                    return
                self._end(
                    task,
                    TaskState.COMPLETED,
                    EventKind.END,
                    {"tokens_out": tokens_out, "decode_time_ms": round(decode_time_ms, 3)},
                )
            case Failed(error, tokens_sent):
                if tokens_sent == 0 and error.retriable and task.attempts < MAX_ATTEMPTS:
                    task.state = TaskState.QUEUED
                    self._running.pop(task.id, None)
                    self._waiting.appendleft(task)  # it keeps its turn
                    return
                self._fail(task, error.code, error.message, retriable=error.retriable)
            case Interrupted():
                self._fail(task, ErrorCode.INTERNAL, "session interrupted", retriable=True)

    def _replica_lost(self, code: ErrorCode, detail: str) -> None:
        """Every running task was on the lost engine: requeue or end it (``_stop_running``)."""
        if self._pool is PoolState.READY:
            self._set_pool(PoolState.STARTING, detail)
        self._stop_running(code, detail, TaskState.FAILED)

    def _stop_running(self, code: ErrorCode, detail: str, state: TaskState) -> tuple[int, int]:
        """Stop every running task: requeue (in their order, at the head) those that have
        not sent a token and may try again; end the others with ``code`` in ``state``.
        Returns how many were requeued and how many ended."""
        running = sorted(self._running.values(), key=lambda t: t.dispatched_at or 0.0)
        requeue = []
        for task in running:
            assert task.scope is not None
            task.scope.cancel()
            task.scope = task.slot = None
            if task.log.tokens == 0 and task.attempts < MAX_ATTEMPTS:
                task.state = TaskState.QUEUED
                self._running.pop(task.id, None)
                requeue.append(task)
            else:
                self._fail(task, code, detail, retriable=True, state=state)
        self._waiting.extendleft(reversed(requeue))
        return len(requeue), len(running) - len(requeue)

    def _set_pool(self, state: PoolState, detail: str) -> None:
        self._replica_detail = detail
        if self._pool is PoolState.READY and state is not PoolState.READY:
            self.sessions.engine_restarted()  # it may come back with its KV cache empty
        if state is not self._pool:
            self._pool = state
            self._pool_changed.set()
            self._pool_changed = trio.Event()

    def _cancel(self, task_id: str, reason: CancelReason) -> TaskState | None:
        task = self._tasks.get(task_id)
        if task is None:
            return None
        if task.state.terminal:
            return task.state
        if task.state is TaskState.QUEUED:
            self._waiting.remove(task)
        messages = {
            "client": "cancelled by the client",
            "orphaned": "cancelled: every reader left and none came back in time",
            "shutdown": "cancelled: orchestra is shutting down",
            "session": "cancelled: its session was deleted",
        }
        self._fail(
            task,
            ErrorCode.CANCELLED,
            messages[reason],
            retriable=reason == "shutdown",
            state=TaskState.CANCELLED,
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
        self._end(
            task,
            state,
            EventKind.ERROR,
            {"code": str(code), "retriable": retriable, "message": message},
        )

    def _end(self, task: Task, state: TaskState, kind: EventKind, data: dict[str, object]) -> None:
        """The one place a task ends: state and log change together."""
        now = trio.current_time()
        task.state = state
        self._running.pop(task.id, None)
        task.ended_at = now
        task.log.finish(kind, data)
        self._ended[state] += 1
        self.metrics.task_ended(state, task.error_code, task.tokens_out or task.log.tokens)
        session_id = task.request.session_id
        session = None if session_id is None else self.sessions.get(session_id)
        if session is not None and session.live is task:
            self.sessions.task_ended(
                session,
                task,
                now,
                tokens_out=task.tokens_out or task.log.tokens,
                tokens_in=task.tokens_in,
                cached=task.cached_tokens,
                slot=task.ran_on,
            )
        started = task.dispatched_at
        log.info(
            "task %s %s",
            task.id,
            state,
            extra={
                "correlation_id": task.correlation_id,
                "job_id": task.id,
                "outcome": str(state),
                "error_code": task.error_code,
                "attempts": task.attempts,
                "tokens_in": task.tokens_in,
                "tokens_out": task.tokens_out or task.log.tokens,
                "decode_time_ms": task.decode_time_ms,
                "queue_wait_ms": None if started is None else _ms(started - task.submitted_at),
            },
        )
        self._expiry.append((now + self.retention_s, task))

    def _delete_session(self, session_id: str) -> tuple[SessionView, int | None] | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        view = self.sessions.view(session, trio.current_time())
        erase = session.slot if self.sessions.kv_warm(session) else None
        if session.live is not None:
            self._cancel(session.live.id, "session")
        self.sessions.delete(session_id)
        return view, erase

    def _next_expiry(self) -> float:
        return self._expiry[0][0] if self._expiry else float("inf")

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, task = self._expiry.popleft()
            if self._tasks.get(task.id) is task:
                del self._tasks[task.id]

    def _update_idle(self) -> None:
        self._idle = _flag(self._idle, not self._waiting and self._busy == 0)
        self._quiet = _flag(self._quiet, self._busy == 0)

    # -- session tasks -----------------------------------------------------------------

    async def _run_session(self, task: Task, attempt: int, session: StreamSession) -> None:
        assert self._sessions is not None
        watcher = trio.CancelScope()
        self._sessions.start_soon(self._watch_readers, task, watcher)
        try:
            outcome = await session.run()
        finally:
            watcher.cancel()
        await self._inbox.send(SessionEnded(task, attempt, outcome))

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

    # -- the interface for other actors and the HTTP face ------------------------------

    async def submit(self, request: TaskRequest, fingerprint: str) -> Admitted:
        """Admit a task or raise ApiError; never waits for queue space (429 instead)."""
        reply: Reply[Admitted | ApiError] = Reply()
        try:
            self._inbox.send_nowait(Submit(request, fingerprint, reply, logs.correlation_id.get()))
        except trio.WouldBlock:
            raise self._queue_full() from None
        result = await reply.receive()
        if isinstance(result, ApiError):
            raise result
        return result

    async def delete_session(self, session_id: str) -> tuple[SessionView, bool] | None:
        """Forget a session (cancelling its task in progress) and erase its slot's cache;
        the session as it was and whether its cache was erased, or None if unknown."""
        reply: Reply[tuple[SessionView, int | None] | None] = Reply()
        await self._inbox.send(DeleteSession(session_id, reply))
        deleted = await reply.receive()
        if deleted is None:
            return None
        view, slot = deleted
        erased = False
        if slot is not None:
            # The engine erases a busy slot once it is free; by then it holds another
            # task's context, so waiting long buys nothing.
            with trio.move_on_after(5):
                try:
                    erased = await self.engine.erase_slot(slot)
                except EngineError as exc:
                    log.warning("could not erase slot %d: %s", slot, exc.message)
        return view, erased

    async def cancel(self, task_id: str, reason: CancelReason = "client") -> TaskState | None:
        """Cancel a task; its state afterwards, or None if unknown. Idempotent."""
        reply: Reply[TaskState | None] = Reply()
        await self._inbox.send(Cancel(task_id, reason, reply))
        return await reply.receive()

    async def replica_status(self, status: ReplicaStatus) -> None:
        """Tell the Queue whether the replica is ready and how many slots it has.

        Returns once the Queue has applied it.
        """
        reply: Reply[None] = Reply()
        await self._inbox.send(ReplicaChanged(status, reply))
        await reply.receive()

    async def replica_lost(self, code: ErrorCode, detail: str) -> None:
        """The engine process died or hung; returns once its tasks are dealt with."""
        reply: Reply[None] = Reply()
        await self._inbox.send(ReplicaLost(code, detail, reply))
        await reply.receive()

    async def wait_ready(self, ready: bool = True) -> None:
        """Return once the Queue considers the replica ready (or not, with ``ready=False``)."""
        while (self._pool is PoolState.READY) != ready:
            await self._pool_changed.wait()
        await trio.lowlevel.checkpoint()

    async def wait_pool_state(self, state: PoolState) -> None:
        """Return once the replica is in ``state``."""
        while self._pool is not state:
            await self._pool_changed.wait()
        await trio.lowlevel.checkpoint()

    async def refuse_new(self) -> None:
        """From now on, answer submissions with 503 (shutdown has begun)."""
        reply: Reply[None] = Reply()
        await self._inbox.send(RefuseNew(reply))
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

    # -- reads (never change anything) -------------------------------------------------

    def log_of(self, task_id: str) -> EventLog | None:
        """The event log of a known task."""
        task = self._tasks.get(task_id)
        return None if task is None else task.log

    def view(self, task_id: str) -> TaskView | None:
        """A snapshot of a known task."""
        task = self._tasks.get(task_id)
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
            queue_wait_ms=None if started is None else _ms(started - task.submitted_at),
            run_ms=None if started is None or ended is None else _ms(ended - started),
        )

    def session_view(self, session_id: str) -> SessionView | None:
        """A snapshot of a live session."""
        session = self.sessions.get(session_id)
        return None if session is None else self.sessions.view(session, trio.current_time())

    def statistics(self) -> QueueStatistics:
        """A snapshot for health and metrics."""
        return QueueStatistics(
            ready=self._pool is PoolState.READY,
            pool_state=self._pool,
            refusing=self._refusing,
            draining=self._draining,
            replica_detail=self._replica_detail,
            queue_depth=len(self._waiting),
            queue_capacity=self.capacity,
            slots_total=self._slots_total,
            slots_busy=self._busy,
            tasks_known=len(self._tasks),
            mean_service_ms=_ms(self.rate.mean_service_s),
            ended=dict(self._ended),
        )
