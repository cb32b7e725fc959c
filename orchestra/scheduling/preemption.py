"""Preemption: an interactive task never waits behind a batch task that has sent nothing.

The Queue dispatches up to ``slots + engine_backlog`` tasks, so a batch task may sit in
the engine's own queue (or evaluate its prompt) when an interactive task arrives. Such a
batch task has sent no token and is cancellable, so it is taken back: its engine stream is
closed, it returns to the head of its class, and the room goes to the interactive task.

Only a task beyond the engine's slots is taken back (the first ``slots`` running tasks, in
dispatch order, hold the engine's slots; the others wait in its queue), and batch is still
never starved:

- a batch task dispatched by the waiting line's fairness rule (one dispatch in every
  ``batch_every`` while interactive tasks waited) is not preemptible; only one dispatched
  while no interactive task waited is;
- a task is taken back at most once: its next dispatch keeps its room.

Pure: no trio.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestra.scheduling.record import Task
from orchestra.task import Priority


def preemptible_at_dispatch(task: Task, interactive_waiting: int) -> bool:
    """Whether ``task``, being dispatched while ``interactive_waiting`` interactive tasks
    are left waiting, may later be taken back for an interactive task."""
    return (
        task.request.priority is Priority.BATCH
        and interactive_waiting == 0
        and task.preemptions == 0
    )


def victim(running: Iterable[Task], next_waiting: Priority | None, slots: int) -> Task | None:
    """The running task to take back for the next waiting one, or None.

    Only when the waiting line would dispatch an interactive task next; the victim is the
    preemptible batch task that has sent no token and waits in the engine's queue (beyond
    the first ``slots`` of ``running``, which is in dispatch order), dispatched last.
    """
    if next_waiting is not Priority.INTERACTIVE:
        return None
    backlog = list(running)[slots:]
    candidates = [t for t in backlog if t.preemptible and t.log.tokens == 0]
    if not candidates:
        return None
    return max(candidates, key=lambda t: t.dispatched_seq)
