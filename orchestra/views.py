"""Read-only snapshots the actors hand out (``view()``, ``statistics()``): plain frozen
values that the HTTP face and the metrics read, and never change."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from orchestra.pool import PoolStatus
from orchestra.task import TaskState


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
    artifact_id: str | None = None
    """The artifact its output was kept as, once it completed (when it asked)."""
    artifact_error: str | None = None
    """Why its output could not be kept as the artifact it asked for."""


@attrs.frozen
class TaskSummary:
    """One task as ``GET /v1/tasks`` lists it: where it is and what it has sent, never its
    prompt or its text (those are the stream's)."""

    task_id: str
    state: TaskState
    priority: str
    queue_position: int | None
    """Tasks ahead of it in the waiting line (0: next), while it waits."""
    predicted_start_ms: int | None
    """When it is predicted to start, from now, while it waits."""
    tokens_out: int
    max_tokens: int
    replica: str | None
    """The replica running it (or that ran it last)."""
    attempts: int
    age_ms: int
    """Since its admission."""
    run_ms: int | None
    """Since its first dispatch (until its end, once it ended)."""
    ended_ms_ago: int | None
    error_code: str | None
    error_message: str | None
    session_id: str | None
    face: str


@attrs.frozen
class QueueStatistics:
    """A snapshot of the Queue for health, capabilities and metrics."""

    pool: PoolStatus
    """The one pool state (:class:`~orchestra.pool.PoolStatus`): whether it serves, why
    not, and what health calls its state."""
    queue_depth: int
    queue_capacity: int
    slots_total: int
    slots_busy: int
    tasks_known: int
    mean_service_ms: int
    ended: Mapping[str, int]
    idle_since: float | None = None
    """Trio time at which its last task ended with nothing else waiting or running (or
    it was created); None while it has work."""
    last_used: float = 0.0
    """Trio time of its last submission or task end."""
    oldest_wait: float | None = None
    """Trio time at which its longest-waiting task was admitted; None when none waits."""
    tokens_out_total: int = 0
    """Tokens sent since the start: by the tasks that ended and, so far, by those running."""


@attrs.frozen
class AdmissionStatistics:
    """A snapshot of Admission's counters."""

    admitted: Mapping[tuple[str, str], int]
    """Tasks admitted, by face (``v1``, ``openai``) and model (pool id)."""
    rejected: Mapping[tuple[str, str, str], int]
    """Requests refused, by face, error code and model (empty: none known)."""
