"""Every task the Queue knows, from its admission until its retention runs out.

A task that ended stays known for ``retention_s`` (a late reader still gets its events,
its status still answers), then it is forgotten. Ending a task changes its state and
closes its log in one step (:meth:`TaskTable.end`), which is what makes "no token after a
cancel" hold. Only the Queue's run loop uses it; no trio.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import attrs

from orchestra.events import EventKind
from orchestra.scheduling.figures import ms
from orchestra.scheduling.record import Task
from orchestra.task import TaskState
from orchestra.views import TaskSummary


@attrs.define
class TaskTable:
    """The known tasks by id, when each one that ended is forgotten, and the ends counted."""

    retention_s: float
    _tasks: dict[str, Task] = attrs.field(factory=dict, init=False)
    _expiry: deque[tuple[float, Task]] = attrs.field(factory=deque, init=False)
    _ended: Counter[str] = attrs.field(factory=Counter, init=False)
    _tokens_ended: int = attrs.field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, task_id: str | None) -> Task | None:
        """The known task ``task_id``, or None."""
        return None if task_id is None else self._tasks.get(task_id)

    def add(self, task: Task) -> None:
        """A newly admitted task."""
        self._tasks[task.id] = task

    def live(self) -> list[Task]:
        """The tasks that have not ended."""
        return [task for task in self._tasks.values() if not task.state.terminal]

    def end(
        self, task: Task, state: TaskState, kind: EventKind, data: Mapping[str, Any], now: float
    ) -> None:
        """End ``task`` at ``now`` in ``state``: its log ends with ``kind`` in the same step,
        and it is forgotten ``retention_s`` later."""
        task.state = state
        task.ended_at = now
        task.log.finish(kind, data)
        self._ended[state] += 1
        self._tokens_ended += task.tokens_out or task.log.tokens
        self._expiry.append((now + self.retention_s, task))

    def next_expiry(self) -> float:
        """When the next ended task is to be forgotten (``inf``: none is)."""
        return self._expiry[0][0] if self._expiry else float("inf")

    def expire(self, now: float) -> None:
        """Forget every ended task whose retention ran out by ``now``."""
        while self._expiry and self._expiry[0][0] <= now:
            _, task = self._expiry.popleft()
            if self._tasks.get(task.id) is task:
                del self._tasks[task.id]

    def recently_ended(self) -> list[Task]:
        """The ended tasks still known, the latest to end first."""
        ended = [task for _, task in reversed(self._expiry)]
        return [task for task in ended if self._tasks.get(task.id) is task]

    def tokens_out_total(self) -> int:
        """Tokens sent by every task that ended, since the start (forgotten ones too)."""
        return self._tokens_ended

    def ended(self) -> dict[str, int]:
        """How many tasks ended in each state."""
        return dict(self._ended)


def task_summary(
    task: Task, now: float, position: int | None = None, predicted: int | None = None
) -> TaskSummary:
    """``task`` as ``GET /v1/tasks`` lists it at ``now``; ``position`` and ``predicted`` (its
    place in the line and predicted start) while it waits."""
    started, ended = task.dispatched_at, task.ended_at
    message = None
    if task.state is TaskState.FAILED and task.log.events:
        message = str(task.log.events[-1].data.get("message", "")) or None
    return TaskSummary(
        task_id=task.id,
        state=task.state,
        priority=str(task.request.priority),
        queue_position=position,
        predicted_start_ms=predicted,
        tokens_out=task.tokens_out or task.log.tokens,
        max_tokens=task.request.max_tokens,
        replica=task.replica,
        attempts=task.attempts,
        age_ms=ms(now - task.submitted_at),
        run_ms=None if started is None else ms((ended or now) - started),
        ended_ms_ago=None if ended is None else ms(now - ended),
        error_code=task.error_code,
        error_message=message,
        session_id=task.request.session_id,
        face=str(task.request.face),
    )
