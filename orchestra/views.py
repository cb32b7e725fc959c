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


@attrs.frozen
class QueueStatistics:
    """A snapshot of the Queue for health, capabilities and metrics."""

    pool: PoolStatus
    """The one pool state (:class:`~orchestra.pool.PoolStatus`)."""
    queue_depth: int
    queue_capacity: int
    slots_total: int
    slots_busy: int
    tasks_known: int
    mean_service_ms: int
    ended: Mapping[str, int]

    @property
    def ready(self) -> bool:
        """The engine can take work (whether or not the pool is drained)."""
        return self.pool.ready

    @property
    def serving(self) -> bool:
        """Ready and not draining: a submission would be admitted (room permitting)."""
        return self.pool.serving

    @property
    def state(self) -> str:
        """``ready``, ``starting``, ``unavailable`` or ``draining``, as health reports it."""
        return self.pool.health_state

    @property
    def refusing(self) -> bool:
        """Shutting down: submissions get 503."""
        return self.pool.refusing

    @property
    def draining(self) -> bool:
        """Drained through the control plane: nothing is dispatched, submissions get 503."""
        return self.pool.draining

    @property
    def replica_detail(self) -> str:
        """Why the engine is not ready, in the supervisor's words (or ``ready``)."""
        return self.pool.detail


@attrs.frozen
class AdmissionStatistics:
    """A snapshot of Admission's counters."""

    admitted: int
    rejected: Mapping[str, int]
