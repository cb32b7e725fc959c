"""The Queue's pure policies, driven without an event loop (issue 14): cuts, admission
checks, the running set and the task table."""

from __future__ import annotations

from orchestra.errors import ErrorCode
from orchestra.events import EventKind, EventLog
from orchestra.scheduling import admission_checks
from orchestra.scheduling.cuts import Cuts, cut_error
from orchestra.scheduling.record import Task
from orchestra.scheduling.running import Running
from orchestra.scheduling.table import TaskTable
from orchestra.task import Priority, TaskRequest, TaskState


def _task(
    name: str, *, priority: Priority = Priority.INTERACTIVE, deadline_ms: int | None = None
) -> Task:
    request = TaskRequest(prompt=name, max_tokens=8, priority=priority, deadline_ms=deadline_ms)
    return Task(id=name, request=request, fingerprint=name, log=EventLog(limit=12),
                submitted_at=0.0, queue_position=0, predicted_start_ms=0)  # fmt: skip


def test_cuts_come_due_in_time_order_and_say_why() -> None:
    cuts = Cuts()
    waiting, running = _task("waiting", deadline_ms=1000), _task("running", deadline_ms=500)
    running.state = TaskState.RUNNING
    cuts.add(1.0, waiting, 0, "deadline")
    cuts.add(0.5, running, 0, "deadline")
    assert cuts.next_at() == 0.5
    assert list(cuts.due(0.4)) == []
    due = list(cuts.due(2.0))
    assert [task.id for task, _ in due] == ["running", "waiting"]
    assert [error.code for _, error in due] == [ErrorCode.DEADLINE_UNMET] * 2
    assert "after 0 tokens" in due[0][1].message and "before the task started" in due[1][1].message
    assert cuts.next_at() == float("inf")


def test_a_budget_cut_applies_to_its_dispatch_only() -> None:
    task = _task("turn")
    task.state, task.attempts = TaskState.RUNNING, 2
    assert cut_error(task, 1, "budget") is None  # requeued since: a cut of an older dispatch
    error = cut_error(task, 2, "budget")
    assert error is not None and error.code is ErrorCode.BUDGET_EXCEEDED and not error.retriable
    task.state = TaskState.COMPLETED
    assert cut_error(task, 2, "budget") is None  # ended already


def test_admission_checks() -> None:
    assert admission_checks.capacity_of(Priority.BATCH, 16, 4) == 4
    assert admission_checks.capacity_of(Priority.BATCH, 16, None) == 16
    full = admission_checks.queue_full(Priority.BATCH, 16, 4, 1500)
    assert full.code is ErrorCode.ADMISSION_REJECT and full.retry_after_ms == 1500
    assert full.policy_label == admission_checks.BATCH_QUEUE_CAPACITY
    interactive = admission_checks.queue_full(Priority.INTERACTIVE, 16, 4, 1500)
    assert interactive.policy_label == admission_checks.QUEUE_CAPACITY
    request = _task("d", deadline_ms=1000).request
    assert admission_checks.deadline_unmet(request, 500, None, 100) is None  # speed unknown
    assert admission_checks.deadline_unmet(request, 500, 100.0, 100) is None  # 500 + 80 ms
    late = admission_checks.deadline_unmet(request, 950, 100.0, 100)  # 950 + 80 > 1000
    assert (
        late is not None
        and late.code is ErrorCode.DEADLINE_UNMET
        and late.policy_label == "deadline"
    )


def test_the_running_set_holds_room_until_the_session_ends() -> None:
    running = Running()
    first, second = _task("first"), _task("second", priority=Priority.BATCH)
    running.add(first, preemptible=False)
    running.add(second, preemptible=True)
    assert [t.id for t in running] == ["first", "second"] and running.busy == 2
    running.take_back(second)
    assert second.state is TaskState.QUEUED and second.preemptions == 1 and running.taking_back
    assert second.scope is None and [t.id for t in running] == ["first"]
    assert running.busy == 2  # its stream is still closing
    assert not running.session_ended(second, 1)  # a dispatch taken back: not its outcome
    assert running.busy == 1 and not running.taking_back
    assert running.session_ended(first, 1)  # the current dispatch of a running task
    assert second.counted_attempts == 0


def test_the_table_forgets_an_ended_task_after_its_retention() -> None:
    table = TaskTable(retention_s=10.0)
    done, live = _task("done"), _task("live")
    table.add(done)
    table.add(live)
    table.end(done, TaskState.COMPLETED, EventKind.END, {"tokens_out": 0}, now=5.0)
    assert done.log.closed and done.ended_at == 5.0 and table.ended() == {"completed": 1}
    assert table.live() == [live] and table.next_expiry() == 15.0
    table.expire(14.9)
    assert table.get("done") is done
    table.expire(15.0)
    assert table.get("done") is None and table.get("live") is live and len(table) == 1
