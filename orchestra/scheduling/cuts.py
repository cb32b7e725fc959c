"""Cuts: tasks to end at a set time, and why.

A task with a ``deadline_ms`` is cut at its deadline, whatever attempt it is on (waiting:
it leaves the line; running: its stream is cut). A session's turn is cut when the
session's wall-time budget runs out, for that dispatch only (a requeued turn gets a cut of
its own when it is dispatched again). The Queue keeps the heap and applies what
:meth:`Cuts.due` gives it; what a cut says is :func:`cut_error`. Pure: no trio.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Literal

import attrs

from orchestra.errors import ErrorCode
from orchestra.scheduling.record import Task
from orchestra.task import TaskState

Cut = Literal["deadline", "budget"]
"""Why a task is ended at a set time: its deadline, or its session's wall-time budget."""


@attrs.frozen
class CutError:
    """How a cut task ends: the error its stream ends with."""

    code: ErrorCode
    message: str
    retriable: bool


@attrs.define
class Cuts:
    """A heap of (when, sequence number, task, attempt, why)."""

    _heap: list[tuple[float, int, Task, int, Cut]] = attrs.field(factory=list, init=False)
    _seq: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, task: Task, attempt: int, why: Cut) -> None:
        """End ``task`` at ``when`` (attempt 0: whatever attempt it is on then)."""
        heapq.heappush(self._heap, (when, next(self._seq), task, attempt, why))

    def next_at(self) -> float:
        """When the next cut is due (``inf`` when none is)."""
        return self._heap[0][0] if self._heap else float("inf")

    def due(self, now: float) -> Iterator[tuple[Task, CutError]]:
        """Every task to end now, with how; cuts that no longer apply are dropped."""
        while self._heap and self._heap[0][0] <= now:
            _, _, task, attempt, why = heapq.heappop(self._heap)
            error = cut_error(task, attempt, why)
            if error is not None:
                yield task, error


def cut_error(task: Task, attempt: int, why: Cut) -> CutError | None:
    """How a cut ends ``task``, or None when it no longer applies (the task ended, or a
    budget cut's dispatch was requeued since)."""
    if task.state.terminal:
        return None
    tokens = task.log.tokens
    if why == "budget":
        if task.state is not TaskState.RUNNING or task.attempts != attempt:
            return None
        return CutError(
            ErrorCode.BUDGET_EXCEEDED,
            f"the session's wall-time budget ran out after {tokens} tokens",
            retriable=False,
        )
    deadline_ms = task.request.deadline_ms
    if task.state is TaskState.QUEUED:
        message = f"the deadline ({deadline_ms} ms) passed before the task started"
    else:
        message = f"the deadline ({deadline_ms} ms) passed after {tokens} tokens"
    return CutError(ErrorCode.DEADLINE_UNMET, message, retriable=True)
