"""The waiting line's dispatch rule: interactive first, batch never starved, FIFO within a
class, and positions that match the order tasks really leave in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestra.events import EventLog
from orchestra.scheduling.record import Task
from orchestra.scheduling.waiting import WaitingLine
from orchestra.task import Priority, TaskRequest


def _task(name: str, priority: Priority) -> Task:
    request = TaskRequest(prompt=name, max_tokens=1, priority=priority)
    return Task(
        id=name,
        request=request,
        fingerprint=name,
        log=EventLog(limit=4),
        submitted_at=0.0,
        queue_position=0,
        predicted_start_ms=0,
    )


# an operation: admit a task of a class, or dispatch the next one
_ops = st.lists(st.one_of(st.sampled_from(Priority), st.just("pop")), max_size=120)


@given(ops=_ops, batch_every=st.integers(1, 6))
def test_interactive_first_batch_never_starved_fifo_within_a_class(
    ops: list[Priority | str], batch_every: int
) -> None:
    line = WaitingLine(batch_every)
    streak_with_batch_waiting = 0  # interactive dispatches in a row while batch waited
    admitted: dict[Priority, list[str]] = {p: [] for p in Priority}
    left: dict[Priority, list[str]] = {p: [] for p in Priority}
    for n, op in enumerate(ops):
        if op != "pop":
            assert isinstance(op, Priority)
            task = _task(f"t{n}", op)
            predicted_ahead = line.ahead_of_new(op)
            line.append(task)
            assert line.position(task) == predicted_ahead
            admitted[op].append(task.id)
            continue
        if not line:
            continue
        interactive, batch = line.count(Priority.INTERACTIVE), line.count(Priority.BATCH)
        expected_order = line.order()
        task = line.popleft()
        assert task is expected_order[0]  # positions are the real order
        priority = task.request.priority
        left[priority].append(task.id)
        if batch == 0:
            assert priority is Priority.INTERACTIVE
        elif interactive == 0:
            assert priority is Priority.BATCH
        if priority is Priority.INTERACTIVE and batch > 0:
            streak_with_batch_waiting += 1
            # the bound: never batch_every interactive dispatches in a row while batch waits
            assert streak_with_batch_waiting <= batch_every - 1
        else:
            if priority is Priority.BATCH and interactive > 0:
                # batch went first only because interactive had its full share
                assert streak_with_batch_waiting == batch_every - 1
            streak_with_batch_waiting = 0
    for priority in Priority:  # FIFO within each class
        assert left[priority] == admitted[priority][: len(left[priority])]


def test_a_task_put_back_keeps_its_turn_in_its_class() -> None:
    line = WaitingLine(2)
    first, second = _task("a", Priority.BATCH), _task("b", Priority.BATCH)
    line.append(first)
    line.append(second)
    line.appendleft(line.popleft())  # dispatched, then its engine failed before a token
    assert line.order() == [first, second]
    urgent = _task("c", Priority.INTERACTIVE)
    line.append(urgent)
    assert line.order() == [urgent, first, second]
    line.remove(first)
    assert line.order() == [urgent, second] and len(line) == 2


def test_one_batch_in_every_n_while_both_wait() -> None:
    line = WaitingLine(4)
    for n in range(8):
        line.append(_task(f"i{n}", Priority.INTERACTIVE))
    for n in range(3):
        line.append(_task(f"b{n}", Priority.BATCH))
    assert [t.id for t in line.order()] == [
        "i0", "i1", "i2", "b0", "i3", "i4", "i5", "b1", "i6", "i7", "b2",
    ]  # fmt: skip
