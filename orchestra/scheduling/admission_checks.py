"""The Queue's admission policy: pure functions of the line and the figures.

The pool's own refusals (shutting down, unavailable, drained, not ready) are
:meth:`orchestra.pool.PoolStatus.refusal`; these are the ones that depend on the task:
a full class (429 ``ADMISSION_REJECT``) and a deadline that cannot be met (504
``DEADLINE_UNMET``). Each returns a :class:`~orchestra.errors.Refusal` with the time to
come back, never an HTTP answer.
"""

from __future__ import annotations

from orchestra.errors import ErrorCode, Refusal
from orchestra.task import Priority, TaskRequest

QUEUE_CAPACITY = "queue_capacity"
"""The ``policy_label`` of a full interactive queue (or of the one queue)."""
BATCH_QUEUE_CAPACITY = "batch_queue_capacity"
"""The ``policy_label`` of a full batch queue."""


def capacity_of(priority: Priority, capacity: int, batch_capacity: int | None) -> int:
    """How many tasks of ``priority`` may wait: batch has its own limit when one is set."""
    if priority is Priority.BATCH and batch_capacity is not None:
        return batch_capacity
    return capacity


def queue_full(
    priority: Priority, capacity: int, batch_capacity: int | None, retry_ms: int
) -> Refusal:
    """429 ``ADMISSION_REJECT``: the class of ``priority`` holds all the tasks it may;
    come back in ``retry_ms`` (from the observed service rate)."""
    batch = priority is Priority.BATCH and batch_capacity is not None
    limit = capacity_of(priority, capacity, batch_capacity)
    return Refusal(
        ErrorCode.ADMISSION_REJECT,
        f"the {'batch ' if batch else ''}queue is full ({limit} tasks waiting); "
        f"retry in {retry_ms} ms",
        retriable=True,
        retry_after_ms=retry_ms,
        policy_label=BATCH_QUEUE_CAPACITY if batch else QUEUE_CAPACITY,
    )


def deadline_unmet(
    request: TaskRequest, predicted_start_ms: int, tokens_per_s: float | None, retry_ms: int
) -> Refusal | None:
    """``DEADLINE_UNMET`` when the task is predicted to end after its deadline: it starts
    in ``predicted_start_ms`` and, once the decode speed is known, takes ``max_tokens`` at
    that speed (the worst case: it may stop sooner). None when it is predicted to make it
    (or asks for no deadline)."""
    if request.deadline_ms is None:
        return None
    run_ms = round(request.max_tokens / tokens_per_s * 1000) if tokens_per_s else 0
    if predicted_start_ms + run_ms <= request.deadline_ms:
        return None
    return Refusal(
        ErrorCode.DEADLINE_UNMET,
        f"the deadline ({request.deadline_ms} ms) cannot be met: the task is predicted to "
        f"start in {predicted_start_ms} ms and to need up to {run_ms} ms for "
        f"{request.max_tokens} tokens",
        retriable=True,
        retry_after_ms=retry_ms,
        policy_label="deadline",
    )
