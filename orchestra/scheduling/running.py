"""The tasks at the engine, and the room they hold there.

A dispatch holds its room (one of ``slots + engine_backlog``) from :meth:`Running.add`
until its StreamSession has ended (:meth:`Running.session_ended`), even when the task left
before that (it ended, or it was put back to wait again): its engine stream is closed only
once the session returns. Which task runs again, ends or waits is the Queue's decision;
this is its bookkeeping. Only the Queue's run loop uses it; no trio I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import trio

from orchestra.scheduling.record import Task
from orchestra.task import TaskState


@attrs.define
class Running:
    """The running tasks in dispatch order, the room held, and the dispatches taken back."""

    _tasks: dict[str, Task] = attrs.field(factory=dict, init=False)
    _busy: int = attrs.field(default=0, init=False)
    _taken_back: set[tuple[str, int]] = attrs.field(factory=set, init=False)
    """(task id, attempt) of dispatches taken back whose sessions have not ended yet."""
    _seq: int = attrs.field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        """The running tasks, in dispatch order."""
        return iter(self._tasks.values())

    @property
    def busy(self) -> int:
        """Room held at the engine: running tasks, and sessions still closing."""
        return self._busy

    @property
    def taking_back(self) -> bool:
        """A dispatch taken back has not closed its session yet."""
        return bool(self._taken_back)

    def add(self, task: Task, *, preemptible: bool) -> None:
        """``task`` is dispatched: it runs, in a cancel scope of its own, holding room."""
        self._seq += 1
        task.state = TaskState.RUNNING
        task.attempts += 1
        task.dispatched_seq = self._seq
        task.preemptible = preemptible
        task.scope = trio.CancelScope()
        self._tasks[task.id] = task
        self._busy += 1

    def leave(self, task: Task) -> None:
        """``task`` no longer runs (it ended); its room is held until its session ends."""
        self._tasks.pop(task.id, None)

    def put_back(self, task: Task) -> None:
        """``task`` waits again (the caller puts it in the line)."""
        task.state = TaskState.QUEUED
        task.scope = task.slot = None
        self.leave(task)

    def take_back(self, task: Task) -> None:
        """Preempt ``task``: its stream is closed and it waits again; the preemption does
        not count against its attempts."""
        assert task.scope is not None
        task.scope.cancel()
        self._taken_back.add((task.id, task.attempts))
        task.preemptions += 1
        self.put_back(task)

    def session_ended(self, task: Task, attempt: int) -> bool:
        """The session of ``task``'s dispatch ``attempt`` returned: its room is free.

        True when that dispatch is the task's current one and the task still runs it (so
        its outcome is the task's); False for a dispatch put back or taken back since."""
        self._busy -= 1
        self._taken_back.discard((task.id, attempt))
        return attempt == task.attempts and task.state is not TaskState.QUEUED

    def slots_in_use(self, besides: Task) -> set[int]:
        """The engine slots the other running tasks on ``besides``'s replica were sent to."""
        return {
            t.slot
            for t in self._tasks.values()
            if t.slot is not None and t is not besides and t.replica == besides.replica
        }

    def on(self, replica: str) -> list[Task]:
        """The running tasks on ``replica``, in dispatch order."""
        return [task for task in self._tasks.values() if task.replica == replica]
