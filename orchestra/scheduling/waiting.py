"""The waiting line: tasks admitted but not yet dispatched, by priority class.

Interactive tasks are dispatched before batch ones, and batch is never starved: while a
batch task waits, at most ``batch_every - 1`` interactive tasks are dispatched in a row,
so at least one dispatch in every ``batch_every`` is a batch one. Within a class the order
is first come, first served; a task put back (its engine failed before its first token)
goes to the head of its class and keeps its turn.

Only the Queue actor touches it; every method is synchronous and never blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import attrs

from orchestra.scheduling.record import Task
from orchestra.task import Priority

T = TypeVar("T")


@attrs.define
class WaitingLine:
    """Two FIFO lines and the rule that picks the next task (see the module docstring)."""

    batch_every: int = 4
    """While batch waits, one dispatch in every ``batch_every`` at least is a batch one."""
    _lines: dict[Priority, deque[Task]] = attrs.field(
        factory=lambda: {Priority.INTERACTIVE: deque(), Priority.BATCH: deque()}, init=False
    )
    _streak: int = attrs.field(default=0, init=False)
    """Interactive dispatches in a row while a batch task waited."""

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def __bool__(self) -> bool:
        return any(self._lines.values())

    def __iter__(self) -> Iterator[Task]:
        """Every waiting task, in dispatch order (:meth:`order`)."""
        return iter(self.order())

    def oldest_submitted_at(self) -> float | None:
        """When the longest-waiting task was admitted (None: none waits); each class's
        head is its oldest (a task put back returns to the head it held)."""
        return min((line[0].submitted_at for line in self._lines.values() if line), default=None)

    def count(self, priority: Priority) -> int:
        """Tasks of one class waiting."""
        return len(self._lines[priority])

    def append(self, task: Task) -> None:
        """A newly admitted task: at the end of its class."""
        self._lines[task.request.priority].append(task)

    def appendleft(self, task: Task) -> None:
        """A task put back: at the head of its class."""
        self._lines[task.request.priority].appendleft(task)

    def extendleft(self, tasks: Iterable[Task]) -> None:
        """Put back several tasks, each at the head of its class (the last given ends up
        first, as with :meth:`collections.deque.extendleft`)."""
        for task in tasks:
            self.appendleft(task)

    def remove(self, task: Task) -> None:
        """Take a waiting task out (cancelled, or its deadline passed)."""
        self._lines[task.request.priority].remove(task)

    def popleft(self) -> Task:
        """The next task to dispatch. Raises IndexError when none waits."""
        task, self._streak = self._pick(self._lines, self._streak)
        return task

    def peek(self) -> Task | None:
        """The task :meth:`popleft` would give now (None when none waits)."""
        chosen = self.next_priority()
        return None if chosen is None else self._lines[chosen][0]

    def pop_first(self, fits: Callable[[Task], bool]) -> Task | None:
        """The first task, in dispatch order, that ``fits`` (None when none does), taken
        out as :meth:`popleft` would have taken it: a session's turn whose replica is full
        lets the tasks behind it go to the replicas that have room."""
        for task in self.order():
            if fits(task):
                self.remove(task)
                batch = task.request.priority is Priority.BATCH
                self._streak = 0 if batch or not self._lines[Priority.BATCH] else self._streak + 1
                return task
        return None

    def next_priority(self) -> Priority | None:
        """The class of the task :meth:`popleft` would give now, or None when none waits."""
        lines = self._lines
        return self._next_class(
            bool(lines[Priority.INTERACTIVE]), bool(lines[Priority.BATCH]), self._streak
        )

    def _next_class(self, interactive: bool, batch: bool, streak: int) -> Priority | None:
        """The rule: which class goes next, given which classes wait and the streak."""
        if not batch:
            return Priority.INTERACTIVE if interactive else None
        if not interactive or streak >= self.batch_every - 1:
            return Priority.BATCH
        return Priority.INTERACTIVE

    def _pick(self, lines: dict[Priority, deque[T]], streak: int) -> tuple[T, int]:
        chosen = self._next_class(
            bool(lines[Priority.INTERACTIVE]), bool(lines[Priority.BATCH]), streak
        )
        if chosen is None:
            raise IndexError("no task waits")
        task = lines[chosen].popleft()
        if chosen is Priority.BATCH or not lines[Priority.BATCH]:
            return task, 0
        return task, streak + 1

    def order(self) -> list[Task]:
        """Every waiting task in the order it would be dispatched if nothing else came."""
        lines = {priority: deque(line) for priority, line in self._lines.items()}
        streak, order = self._streak, []
        while any(lines.values()):
            task, streak = self._pick(lines, streak)
            order.append(task)
        return order

    def position(self, task: Task) -> int:
        """How many waiting tasks would be dispatched before ``task``."""
        return self.order().index(task)

    def ahead_of_new(self, priority: Priority) -> int:
        """How many waiting tasks would be dispatched before a new task of ``priority``."""
        newcomer = object()
        lines: dict[Priority, deque[object]] = {p: deque(line) for p, line in self._lines.items()}
        lines[priority].append(newcomer)
        streak, ahead = self._streak, 0
        while True:
            picked, streak = self._pick(lines, streak)
            if picked is newcomer:
                return ahead
            ahead += 1
