"""No interactive task waits behind a batch task that has sent nothing (issue 14, defect 2).

With one slot and ``engine_backlog = 1``, a long batch task runs and a short batch task
waits inside the engine's own queue; an interactive task that arrives then used to get
its first token only after the short batch task. The Queue now takes the backlogged batch
task back (it has sent nothing and is cancellable), returns it to the head of its class and
gives its room to the interactive task. The tests drive the engine step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio
import trio.testing

from orchestra.actors.queue import Queue
from orchestra.actors.stream_session import StreamSession
from orchestra.events import EventKind, EventLog
from orchestra.messages import Interrupted
from orchestra.pool import ReplicaState, ReplicaStatus
from orchestra.scheduling.preemption import preemptible_at_dispatch, victim
from orchestra.scheduling.record import Task
from orchestra.task import Priority, TaskRequest, TaskState

from .test_queue_stateful import ScriptedEngine


async def _queue(nursery: trio.Nursery, engine: ScriptedEngine, batch_every: int = 4) -> Queue:
    queue = Queue(
        capacity=8, engine=engine, retention_s=60.0, orphan_grace_s=60.0, engine_backlog=1,
        batch_every=batch_every,
    )  # fmt: skip
    await nursery.start(queue.run)
    await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ready"))
    return queue


async def _submit(queue: Queue, name: str, priority: Priority) -> str:
    request = TaskRequest(prompt=name, max_tokens=8, priority=priority)
    return (await queue.submit(request, name)).task_id


def _text(log: EventLog) -> str:
    return "".join(str(e.data["t"]) for e in log.events if e.kind is EventKind.TOKEN)


async def test_interactive_takes_the_room_of_a_backlogged_batch_task(
    nursery: trio.Nursery,
) -> None:
    engine = ScriptedEngine()
    queue = await _queue(nursery, engine)
    long_id = await _submit(queue, "long", Priority.BATCH)
    short_id = await _submit(queue, "short", Priority.BATCH)
    await trio.testing.wait_all_tasks_blocked()
    engine.calls["long"].send.send_nowait(("tokens", ["l1"]))  # long holds the slot
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"long", "short"}  # short waits inside the engine

    chat_id = await _submit(queue, "chat", Priority.INTERACTIVE)
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"long", "chat"}  # short's stream was closed, chat sent
    short = queue.view(short_id)
    assert short is not None and short.state is TaskState.QUEUED and short.queue_position == 0

    engine.calls["long"].send.send_nowait(("end", None))  # the slot frees: chat runs next
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"chat", "short"}  # short is back in the backlog
    assert engine.dispatch_order == ["long", "short", "chat", "short"]
    chat2_id = await _submit(queue, "chat2", Priority.INTERACTIVE)
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"chat", "short"}  # taken back once at most: short stays
    engine.calls["chat"].send.send_nowait(("tokens", ["c1", "c2"]))
    engine.calls["chat"].send.send_nowait(("end", None))
    engine.calls["short"].send.send_nowait(("tokens", ["s1"]))
    engine.calls["short"].send.send_nowait(("end", None))
    await trio.testing.wait_all_tasks_blocked()
    engine.calls["chat2"].send.send_nowait(("end", None))
    await queue.wait_idle()

    for task_id, text in ((long_id, "l1"), (chat_id, "c1c2"), (short_id, "s1"), (chat2_id, "")):
        view, log = queue.view(task_id), queue.log_of(task_id)
        assert view is not None and view.state is TaskState.COMPLETED
        assert log is not None and _text(log) == text  # nothing lost, nothing twice
        assert [e.kind for e in log.events].count(EventKind.STARTED) == 1
    short = queue.view(short_id)
    assert short is not None and short.attempts == 2


async def test_a_batch_task_with_a_token_is_not_taken_back(nursery: trio.Nursery) -> None:
    engine = ScriptedEngine()
    queue = await _queue(nursery, engine)
    await _submit(queue, "long", Priority.BATCH)
    await _submit(queue, "short", Priority.BATCH)
    await trio.testing.wait_all_tasks_blocked()
    engine.calls["long"].send.send_nowait(("tokens", ["l1"]))
    engine.calls["short"].send.send_nowait(("tokens", ["s1"]))  # both stream (2 slots' worth)
    await trio.testing.wait_all_tasks_blocked()
    await _submit(queue, "chat", Priority.INTERACTIVE)
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"long", "short"}  # the interactive task waits its turn


async def test_a_batch_task_dispatched_for_fairness_is_not_taken_back(
    nursery: trio.Nursery,
) -> None:
    """Batch is never starved: a batch task that the line's fairness rule sent while
    interactive tasks waited keeps its place."""
    engine = ScriptedEngine()
    queue = await _queue(nursery, engine, batch_every=2)  # 1 interactive in a row at most
    await _submit(queue, "i0", Priority.INTERACTIVE)  # dispatched at once
    await _submit(queue, "i1", Priority.INTERACTIVE)  # into the engine's backlog
    await _submit(queue, "b0", Priority.BATCH)
    await _submit(queue, "i2", Priority.INTERACTIVE)
    await trio.testing.wait_all_tasks_blocked()
    engine.calls["i0"].send.send_nowait(("end", None))  # room: i2 goes (its one in a row)
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"i1", "i2"}
    await _submit(queue, "i3", Priority.INTERACTIVE)
    engine.calls["i1"].send.send_nowait(("end", None))  # room: b0 is due, i3 still waits
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"i2", "b0"}  # b0 was sent for fairness: it keeps its room
    await _submit(queue, "i4", Priority.INTERACTIVE)
    await trio.testing.wait_all_tasks_blocked()
    assert set(engine.calls) == {"i2", "b0"}


def _task(name: str, priority: Priority, seq: int, *, tokens: int = 0, free: bool = True) -> Task:
    log = EventLog(limit=8)
    for _ in range(tokens):
        log.append(EventKind.TOKEN, {"t": "x", "i": 0})
    request = TaskRequest(prompt=name, max_tokens=8, priority=priority)
    task = Task(id=name, request=request, fingerprint=name, log=log, submitted_at=0.0,
                queue_position=0, predicted_start_ms=0)  # fmt: skip
    task.dispatched_seq = seq
    task.preemptible = preemptible_at_dispatch(task, 0 if free else 1)
    return task


def _names(tasks: Iterable[Task | None]) -> list[str | None]:
    return [None if t is None else t.id for t in tasks]


def test_the_victim_is_the_last_dispatched_silent_preemptible_batch_task() -> None:
    a = _task("a", Priority.BATCH, 1)
    b = _task("b", Priority.BATCH, 2)
    spoke = _task("spoke", Priority.BATCH, 3, tokens=1)
    fair = _task("fair", Priority.BATCH, 4, free=False)
    chat = _task("chat", Priority.INTERACTIVE, 5)
    running = [a, b, spoke, fair, chat]
    assert _names([victim(running, Priority.INTERACTIVE, slots=1)]) == ["b"]
    assert victim(running, Priority.BATCH, slots=1) is None  # only for an interactive task
    assert victim(running, None, slots=1) is None
    assert victim([spoke, fair, chat], Priority.INTERACTIVE, slots=1) is None
    assert not chat.preemptible and not fair.preemptible


def test_only_a_task_in_the_engines_queue_is_taken_back() -> None:
    a, b = _task("a", Priority.BATCH, 1), _task("b", Priority.BATCH, 2)
    assert victim([a, b], Priority.INTERACTIVE, slots=2) is None  # both hold slots
    assert _names([victim([a, b], Priority.INTERACTIVE, slots=1)]) == ["b"]


def test_a_task_is_taken_back_at_most_once() -> None:
    task = _task("b", Priority.BATCH, 1)
    assert task.preemptible
    task.preemptions = 1
    assert not preemptible_at_dispatch(task, interactive_waiting=0)


async def test_a_stopped_dispatch_adds_nothing_to_the_log() -> None:
    """A piece that reaches the session after the Queue stopped its dispatch (a requeue or a
    preemption leaves the log open for the next dispatch) is dropped."""
    log, scope = EventLog(limit=8), trio.CancelScope()

    class Engine:
        async def complete(self, params: object, on_token: Callable[[str], None]) -> None:
            on_token("kept")
            scope.cancel()  # the Queue takes the dispatch back between two pieces
            on_token("dropped")  # already read from the socket: no checkpoint in between
            await trio.lowlevel.checkpoint()

    outcome = await StreamSession(Engine(), {}, log, scope).run()  # type: ignore[arg-type]
    assert isinstance(outcome, Interrupted)
    assert _text(log) == "kept" and not log.closed
