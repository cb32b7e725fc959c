"""The Queue's messages: what other actors and the HTTP face ask it, each applied by its
run loop in one synchronous step. Requests carry a one-shot :class:`Reply`."""

from __future__ import annotations

from typing import Literal

import attrs

from orchestra.engine.protocol import Engine
from orchestra.errors import ErrorCode, Refusal
from orchestra.messages import EngineAlarm, Outcome, Reply
from orchestra.obs.tracing import TaskTrace
from orchestra.pool import ReplicaStatus, Residency
from orchestra.scheduling.record import Task
from orchestra.scheduling.sessions import SessionView
from orchestra.task import TaskRequest, TaskState

CancelReason = Literal["client", "orphaned", "shutdown", "session", "unload"]
UnloadMode = Literal["idle", "drain", "force"]
"""How an unload begins: ``idle`` only when nothing runs or waits (an idle timer, an
eviction); ``drain`` lets the running tasks finish; ``force`` cancels them."""


@attrs.frozen(eq=False)
class ReplicaLink:
    """How a pool's Queue reaches one of its replicas: the engine its sessions stream
    from, and the alarm its supervisor listens to."""

    id: str
    """``pool/index``: the ``replica`` label of its metrics and log lines."""
    engine: Engine
    alarm: EngineAlarm = attrs.field(factory=EngineAlarm)
    counts_tokens: bool = True
    """Its engine can count a prompt's tokens (llama-server's ``/tokenize``; an
    OpenAI-compatible server cannot)."""


@attrs.frozen
class Admitted:
    """The Queue's answer to an accepted submission (the 202 body)."""

    task_id: str
    queue_position: int
    predicted_start_ms: int


@attrs.frozen
class Submit:
    """Admit a validated request; answered with Admitted or the Refusal to return."""

    request: TaskRequest
    fingerprint: str
    reply: Reply[Admitted | Refusal]
    correlation_id: str | None = None
    trace: TaskTrace | None = None
    """The trace the HTTP face opened for it, the Queue's from now on (None: not traced)."""


@attrs.frozen
class DeleteSession:
    """Forget a session, cancelling its task in progress; answered with the session as it
    was and the (replica index, slot) whose cache to erase (None when the slot holds
    someone else's), or None when the session is unknown."""

    session_id: str
    reply: Reply[tuple[SessionView, tuple[int, int] | None] | None]


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
    (one the replica lost) only frees its slot; ``replica`` (an index) where it ran.
    """

    task: Task
    attempt: int
    outcome: Outcome
    replica: int = 0


@attrs.frozen
class ReplicaLost:
    """Replica ``replica``'s engine process died or hung: every task running there is
    requeued (no token yet) or ended with ``code`` (``WORKER_RESET`` or
    ``DECODE_TIMEOUT``); the other replicas' tasks go on. Answered once applied."""

    replica: int
    code: ErrorCode
    detail: str
    reply: Reply[None]


@attrs.frozen
class ReplicaChanged:
    """Apply replica ``replica``'s new :class:`ReplicaStatus`; answered once applied."""

    replica: int
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


@attrs.frozen
class SetResidency:
    """The Models actor's word on the pool's model: in memory or not, and the load time a
    waiting task should expect; ``fail_waiting`` ends every waiting task with that code
    and message (a load that failed). Answered once applied."""

    residency: Residency
    load_ms: int
    fail_waiting: tuple[ErrorCode, str] | None
    reply: Reply[None]


@attrs.frozen
class BeginUnload:
    """Stop dispatching because the model is to be unloaded (see :data:`UnloadMode`);
    answered with whether it began (``idle``: only when the pool has no work, checked in
    the same step, so no task admitted meanwhile is stranded) and how many running tasks
    a ``force`` cancelled."""

    mode: UnloadMode
    reply: Reply[tuple[bool, int]]


@attrs.frozen
class Ping:
    """Answered at once: the watchdog's proof that the run loop takes messages."""

    reply: Reply[None]


QueueMsg = (
    Submit | Cancel | SessionEnded | ReplicaChanged | ReplicaLost | RefuseNew | CancelAll
    | SetDraining | StopRunning | DeleteSession | SetResidency | BeginUnload | Ping
)  # fmt: skip
