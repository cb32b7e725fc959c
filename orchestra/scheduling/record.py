"""The Queue's record of one task: its request, its event log and where it is."""

from __future__ import annotations

import attrs
import trio

from orchestra.events import EventKind, EventLog
from orchestra.messages import Completed
from orchestra.obs.tracing import TaskTrace
from orchestra.task import TaskRequest, TaskState


@attrs.define(kw_only=True)
class Task:
    """The Queue's record of one task. The Queue actor is its only writer."""

    id: str
    request: TaskRequest
    fingerprint: str
    """Hash of the request body, to tell an idempotent resubmission from a conflicting one."""
    log: EventLog
    submitted_at: float
    queue_position: int
    """Tasks ahead of it when it was admitted (0: next to run)."""
    predicted_start_ms: int
    """Predicted wait from admission to start, given in the 202."""
    state: TaskState = TaskState.QUEUED
    attempts: int = 0
    """How many times it was dispatched (more than once after an engine failure before its
    first token put it back at the head of the queue, or a preemption)."""
    preemptions: int = 0
    """Dispatches taken back for an interactive task (:mod:`orchestra.scheduling.preemption`);
    they do not count against the Queue's attempt limit."""
    preemptible: bool = False
    """Its current dispatch may be taken back for an interactive task."""
    dispatched_seq: int = 0
    """The Queue's dispatch counter at its latest dispatch (later dispatches: larger)."""
    dispatched_at: float | None = None
    ended_at: float | None = None
    tokens_out: int = 0
    error_code: str | None = None
    scope: trio.CancelScope | None = None
    """The cancel scope of its StreamSession while one runs."""
    correlation_id: str | None = None
    """The correlation id of the request that submitted it (for its log lines)."""
    tokens_in: int | None = None
    """Prompt tokens, as the engine counted them when it finished."""
    decode_time_ms: float | None = None
    cached_tokens: int = 0
    """Prompt tokens the engine reused from its cache, when it finished."""
    slot: int | None = None
    """The engine slot it was sent to (``id_slot``: a session's turn), while it runs."""
    ran_on: int | None = None
    """The engine slot that ran it, once it completed."""
    replica: str | None = None
    """The replica of its latest dispatch (the one running it, while it runs)."""
    token_cap: int | None = None
    """``n_predict`` when its session's token budget lowered it below ``max_tokens``."""
    artifact_id: str | None = None
    """The artifact its output was kept as (``"artifact"`` in the request)."""
    artifact_error: str | None = None
    """Why its output could not be kept."""
    trace: TaskTrace | None = None
    """Its spans (:mod:`orchestra.obs.tracing`), carried here rather than in any task's
    context variables; None when tracing is off. Only the Queue calls it."""

    @property
    def counted_attempts(self) -> int:
        """Dispatches that count against the Queue's attempt limit (preemptions do not)."""
        return self.attempts - self.preemptions

    def log_fields(self) -> dict[str, object]:
        """The fields of the log line written when it ends."""
        started = self.dispatched_at
        return {
            "correlation_id": self.correlation_id,
            "trace_id": None if self.trace is None else self.trace.trace_id,
            "job_id": self.id,
            "face": str(self.request.face),
            "outcome": str(self.state),
            "error_code": self.error_code,
            "attempts": self.attempts,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out or self.log.tokens,
            "decode_time_ms": self.decode_time_ms,
            "queue_wait_ms": None
            if started is None
            else round((started - self.submitted_at) * 1000),
        }

    def first_dispatch(self, now: float) -> int:
        """It got a slot for the first time at ``now``: its ``started`` event is appended;
        how long it waited, in milliseconds."""
        self.dispatched_at = now
        waited_ms = round((now - self.submitted_at) * 1000)
        started = {
            "queue_position": self.queue_position,
            "predicted_start_ms": self.predicted_start_ms,
            "queue_wait_ms": waited_ms,
        }
        self.log.append(EventKind.STARTED, started)
        return waited_ms

    def record_completion(self, done: Completed) -> dict[str, object]:
        """Keep what the engine said when it finished it; the data of its ``end`` event."""
        self.tokens_out, self.tokens_in = done.tokens_out, done.tokens_in
        self.decode_time_ms = round(done.decode_time_ms, 3)
        self.cached_tokens, self.ran_on = done.cached_tokens, done.slot
        end: dict[str, object] = {
            "tokens_out": done.tokens_out,
            "decode_time_ms": self.decode_time_ms,
            "finish_reason": done.finish_reason,
            "tokens_in": done.tokens_in,
            "cached_tokens": done.cached_tokens,
        }
        if done.vectors is not None:
            end["embeddings"] = [list(vector) for vector in done.vectors]
        self.artifact_id, self.artifact_error = done.artifact_id, done.artifact_error
        if done.artifact_id is not None:
            end["artifact_id"] = done.artifact_id
        if done.artifact_error is not None:
            end["artifact_error"] = done.artifact_error
        return end
