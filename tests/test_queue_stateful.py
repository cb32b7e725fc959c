"""Stateful property test of the Queue and its StreamSessions.

Hypothesis drives random interleavings of: submit, cancel, engine token, engine end,
engine failure (before or after the first token, reachable or not), a token racing a
cancel, the replica's slots changing, readers connecting and disconnecting, and time
passing (orphan grace, retention), all under a MockClock. After every step it checks:

- dispatch is FIFO within a priority class: a task starts only when every task of its
  class admitted before it has started or ended;
- interactive goes first, and batch is never starved: while batch tasks wait, every run
  of BATCH_EVERY dispatches holds a batch one (and each pick follows the stated rule);
- deadlines are honoured: once a task's deadline has passed it has ended, and no task ends
  with DEADLINE_UNMET before its deadline;
- never more waiting than each class's capacity (plus tasks put back after an engine
  failure), never more sessions than slots;
- every task ends exactly once, with exactly one terminal event, last in its log;
- after a cancel was answered, the task's log never changes again (no token after cancel);
- a reader that disconnects and resumes from its last event id sees exactly the log;
- sessions run one turn at a time, every turn goes to the session's slot, and budgets are
  never overspent: a session's tokens never exceed its token budget and its run time never
  its wall-time budget; a turn is refused (BUDGET_EXCEEDED) only once a budget or the turn
  cap is spent, and a turn cut for its budget ends with BUDGET_EXCEEDED.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from orchestra.actors.queue import MAX_ATTEMPTS, Queue
from orchestra.config import SessionsConfig
from orchestra.engine.protocol import Completion, EngineProps, HealthProbe, TokenSink
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.events import EventKind, EventLog, StreamEvent
from orchestra.http.envelope import headers_for
from orchestra.pool import ReplicaState, ReplicaStatus
from orchestra.scheduling import preemption
from orchestra.scheduling.record import Task
from orchestra.scheduling.sessions import SessionBook, SessionView
from orchestra.task import Priority, TaskRequest, TaskState

from .trio_driver import TrioDriver

CAPACITY = 3
BATCH_EVERY = 3
ORPHAN_GRACE_S = 5.0
RETENTION_S = 60.0
TOKEN_BUDGET = 4
WALL_BUDGET_S = 1.0
MAX_TURNS = 4
SESSIONS = ("s0", "s1", "s2")


@attrs.define
class EngineCall:
    """One /completion in flight on the scripted engine."""

    prompt: str
    send: trio.MemorySendChannel[tuple[str, Any]]
    params: Mapping[str, Any]
    closed: bool = False


@attrs.define
class ScriptedEngine:
    """An engine whose every step is decided by the test."""

    calls: dict[str, EngineCall] = attrs.field(factory=dict)
    dispatch_order: list[str] = attrs.field(factory=list)
    erased: list[int] = attrs.field(factory=list)

    async def health(self) -> HealthProbe:
        return HealthProbe(True, "ok")

    async def props(self) -> EngineProps:
        return EngineProps(1, 2048, "test", "test.gguf")

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, params: Mapping[str, Any], on_token: TokenSink) -> Completion:
        prompt = params["prompt"]
        send, receive = trio.open_memory_channel[tuple[str, Any]](16)
        call = EngineCall(prompt, send, params)
        assert prompt not in self.calls, "two sessions for one task at once"
        self.calls[prompt] = call
        self.dispatch_order.append(prompt)
        sent = 0
        try:
            async for step, arg in receive:
                if step == "tokens":
                    for text in arg:  # no checkpoint between them: a burst
                        on_token(text)
                        sent += 1
                        if sent == params["n_predict"]:  # the engine stops by itself
                            return Completion(sent, 1.0, "limit", slot=params.get("id_slot"))
                elif step == "end":
                    return Completion(sent, 1.0, "eos", slot=params.get("id_slot"))
                elif step == "fail":
                    raise arg
            raise AssertionError("script channel closed")
        finally:
            call.closed = True
            del self.calls[prompt]

    async def erase_slot(self, slot: int) -> bool:
        self.erased.append(slot)
        return True


@attrs.frozen
class Pick:
    """One dispatch: the class picked, and how many of each class waited just before."""

    priority: Priority
    interactive_waiting: int
    batch_waiting: int


class RecordingQueue(Queue):
    """The Queue, recording the order in which it dispatches (first dispatch only) and
    every pick of the waiting line."""

    dispatched: list[str]
    picks: list[Pick]

    def _start(self, task: Task, replica: int) -> None:
        if task.attempts == 0:
            self.dispatched.append(task.request.prompt)
        priority = task.request.priority
        waiting = self._waiting
        self.picks.append(
            Pick(
                priority,
                waiting.count(Priority.INTERACTIVE) + (priority is Priority.INTERACTIVE),
                waiting.count(Priority.BATCH) + (priority is Priority.BATCH),
            )
        )
        super()._start(task, replica)


@attrs.define
class Reader:
    """An SSE reader of one task's log, able to disconnect and resume."""

    log: EventLog
    seen: list[StreamEvent] = attrs.field(factory=list)
    scope: trio.CancelScope | None = None
    done: bool = False

    async def follow(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self.scope:
            self.log.add_subscriber()
            task_status.started()
            try:
                index = self.seen[-1].id + 1 if self.seen else 0
                while True:
                    events = self.log.events_from(index)
                    self.seen.extend(events)
                    index += len(events)
                    if self.log.closed and index == len(self.log):
                        self.done = True
                        return
                    await self.log.wait_beyond(index)
            finally:
                self.log.remove_subscriber()


@attrs.define
class Submitted:
    name: str
    task_id: str
    log: EventLog
    priority: Priority = Priority.INTERACTIVE
    deadline_at: float | None = None  # mock-clock time
    frozen_at: int | None = None  # log length when a cancel was answered
    session: str | None = None
    submitted_at: float = 0.0  # mock-clock time


class QueueMachine(RuleBasedStateMachine):
    @initialize(slots=st.integers(1, 3), backlog=st.integers(0, 1))
    def start(self, slots: int, backlog: int) -> None:
        self.driver = TrioDriver()
        self.engine = ScriptedEngine()
        self.queue = RecordingQueue(
            capacity=CAPACITY,
            batch_capacity=CAPACITY,
            batch_every=BATCH_EVERY,
            engine=self.engine,
            retention_s=RETENTION_S,
            orphan_grace_s=ORPHAN_GRACE_S,
            engine_backlog=backlog,
            sessions=SessionBook(
                SessionsConfig(
                    token_budget=TOKEN_BUDGET,
                    wall_budget_s=WALL_BUDGET_S,
                    max_turns=MAX_TURNS,
                    ttl_s=10_000,
                )
            ),
        )
        self.backlog = backlog
        self.session_tasks: dict[str, list[Submitted]] = {name: [] for name in SESSIONS}
        self.queue.dispatched = []
        self.queue.picks = []
        self.slots = slots
        self.ready = True
        self.draining = False
        self.dispatched_when_drained: int | None = None
        self.tasks: list[Submitted] = []
        self.readers: list[tuple[Submitted, Reader]] = []
        self.counter = 0

        async def boot() -> None:
            assert self.driver.nursery is not None
            await self.driver.nursery.start(self.queue.run)
            await self.queue.replica_status(ReplicaStatus(ReplicaState.READY, slots, "ok"))

        self.driver.run(boot)

    def teardown(self) -> None:
        driver = getattr(self, "driver", None)
        if driver is None:
            return
        try:
            self._finish_everything()
        finally:
            driver.close()

    def _finish_everything(self) -> None:
        self.driver.run(self.queue.set_draining, False)
        self.draining, self.dispatched_when_drained = False, None
        self.driver.run(self.queue.replica_status, ReplicaStatus(ReplicaState.READY, 3, "ok"))
        self.ready, self.slots = True, 3
        for _ in range(4 * len(self.tasks) + 4):
            if not self.engine.calls:
                break
            for call in list(self.engine.calls.values()):
                self.driver.run_sync(call.send.send_nowait, ("end", None))
        assert not self.engine.calls
        for task in self.tasks:
            assert task.log.closed, f"{task.name} never ended"
        self.invariants_hold()

    # -- helpers --------------------------------------------------------------------------

    def _running(self) -> list[Submitted]:
        return [t for t in self.tasks if t.name in self.engine.calls]

    def _send(self, task: Submitted, step: str, arg: Any) -> None:
        call = self.engine.calls[task.name]
        self.driver.run_sync(call.send.send_nowait, (step, arg))

    # -- rules ----------------------------------------------------------------------------

    @rule(
        priority=st.sampled_from(Priority),
        deadline_ms=st.one_of(st.none(), st.sampled_from([400, 3000, 20_000])),
        session=st.one_of(st.none(), st.sampled_from(SESSIONS)),
        max_tokens=st.sampled_from([3, 64]),
    )
    def submit(
        self, priority: Priority, deadline_ms: int | None, session: str | None, max_tokens: int
    ) -> None:
        name = f"task-{self.counter}"
        self.counter += 1
        request = TaskRequest(
            prompt=name,
            max_tokens=max_tokens,
            priority=priority,
            deadline_ms=deadline_ms,
            session_id=session,
        )
        waiting = sum(1 for t in self.tasks if t.priority is priority and self._waiting(t))
        before = None if session is None else self._session_view(session)
        try:
            admitted = self.driver.run(self.queue.submit, request, name)
        except Refusal as exc:
            if self.draining and self.ready:
                assert exc.code is ErrorCode.POOL_UNREADY and exc.retriable
            elif self.draining or not self.ready:
                assert exc.code in (ErrorCode.POOL_UNREADY, ErrorCode.POOL_UNAVAILABLE)
            elif exc.code is ErrorCode.DEADLINE_UNMET:
                assert deadline_ms is not None and exc.retriable
            elif exc.code is ErrorCode.CONFLICT:
                assert session is not None
                assert any(not t.log.closed for t in self.session_tasks[session])
            elif exc.code is ErrorCode.BUDGET_EXCEEDED:
                assert before is not None and not exc.retriable
                left = before.budget_left
                assert left.tokens is not None and left.wall_s is not None
                spent = {"turns": before.turns >= MAX_TURNS, "tokens": left.tokens <= 0}
                spent["wall_time"] = left.wall_s <= 0
                assert exc.policy_label is not None and spent[exc.policy_label], (exc, before)
            else:
                assert exc.code is ErrorCode.ADMISSION_REJECT
                assert waiting >= CAPACITY
                assert exc.policy_label == (
                    "batch_queue_capacity" if priority is Priority.BATCH else "queue_capacity"
                )
                assert exc.retry_after_ms is not None and exc.retry_after_ms >= 1
                assert int(headers_for(exc)["Retry-After"]) >= 1
            return
        assert self.ready and not self.draining
        log = self.queue.log_of(admitted.task_id)
        assert log is not None
        deadline_at = None
        if deadline_ms is not None:
            deadline_at = self.driver.clock.current_time() + deadline_ms / 1000
        submitted = Submitted(
            name,
            admitted.task_id,
            log,
            priority,
            deadline_at,
            session=session,
            submitted_at=self.driver.clock.current_time(),
        )
        self.tasks.append(submitted)
        if session is not None:
            if before is not None:  # a session that lives on: it had no turn in progress
                assert all(t.log.closed for t in self.session_tasks[session])
                assert before.turns < MAX_TURNS
            self.session_tasks[session].append(submitted)

    @precondition(lambda self: any(self.session_tasks.values()))
    @rule(data=st.data())
    def delete_session(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from([s for s, ts in self.session_tasks.items() if ts]))
        deleted = self.driver.run(self.queue.delete_session, session)
        assert deleted is not None
        for task in self.session_tasks[session]:
            assert task.log.closed, "deleting a session ends its turn in progress"
            if task.frozen_at is None:
                task.frozen_at = len(task.log)
        self.session_tasks[session] = []
        assert self._session_view(session) is None

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.tasks))
        self._cancel(task)

    def _cancel(self, task: Submitted) -> None:
        before = self.queue.view(task.task_id)
        state = self.driver.run(self.queue.cancel, task.task_id)
        if before is None:  # forgotten after its retention
            assert state is None
            return
        assert state is not None
        if before.state.terminal:
            assert state is before.state
        else:
            assert state is TaskState.CANCELLED
        if state is TaskState.CANCELLED and task.frozen_at is None:
            task.frozen_at = len(task.log)
            assert task.log.closed
            last = task.log.events[-1]
            assert last.kind is EventKind.ERROR and last.data["code"] == "CANCELLED"
            assert last.data["retriable"] is False

    @precondition(lambda self: self._running())
    @rule(data=st.data(), burst=st.integers(1, 3))
    def engine_tokens(self, data: st.DataObject, burst: int) -> None:
        task = data.draw(st.sampled_from(self._running()))
        self._send(task, "tokens", [f" w{len(task.log)}.{k}" for k in range(burst)])

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def engine_end(self, data: st.DataObject) -> None:
        self._send(data.draw(st.sampled_from(self._running())), "end", None)

    @precondition(lambda self: self._running())
    @rule(data=st.data(), unreachable=st.booleans())
    def engine_failure(self, data: st.DataObject, unreachable: bool) -> None:
        task = data.draw(st.sampled_from(self._running()))
        error = EngineError(ErrorCode.WORKER_RESET, "engine died", True, unreachable)
        self._send(task, "fail", error)
        # A lost engine makes the pool not ready (admission refuses, health says so, nothing
        # is dispatched) until the supervisor's next report.
        self.ready = False

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def token_races_cancel(self, data: st.DataObject) -> None:
        """A token is delivered to the session in the same step the cancel is sent."""
        task = data.draw(st.sampled_from(self._running()))
        call = self.engine.calls[task.name]

        async def race() -> TaskState | None:
            call.send.send_nowait(("tokens", [" racing"]))
            return await self.queue.cancel(task.task_id)

        length_before = len(task.log)
        state = self.driver.run(race)
        assert state is TaskState.CANCELLED
        if task.frozen_at is None:
            task.frozen_at = len(task.log)
        assert task.frozen_at <= length_before + 2  # at most the racing token, then the end

    @rule(state=st.sampled_from(ReplicaState), slots=st.integers(1, 3))
    def replica_changes(self, state: ReplicaState, slots: int) -> None:
        self.driver.run(self.queue.replica_status, ReplicaStatus(state, slots, "probe"))
        self.ready, self.slots = state is ReplicaState.READY, slots
        if state is ReplicaState.UNAVAILABLE:
            with pytest.raises(Refusal) as refused:
                self.driver.run(self.queue.submit, TaskRequest(prompt="x", max_tokens=1), "x")
            assert refused.value.code is ErrorCode.POOL_UNAVAILABLE

    @rule(code=st.sampled_from([ErrorCode.WORKER_RESET, ErrorCode.DECODE_TIMEOUT]))
    def replica_lost(self, code: ErrorCode) -> None:
        """The engine process died or hung under the running tasks."""
        running = [(t, t.log.tokens, self.queue.view(t.task_id)) for t in self._running()]
        self.driver.run(self.queue.replica_lost, code, "engine died")
        self.ready = False
        for task, tokens, before in running:
            view = self.queue.view(task.task_id)
            assert view is not None and before is not None
            if before.state is not TaskState.RUNNING:
                continue
            if tokens == 0 and before.attempts < MAX_ATTEMPTS:
                assert view.state is TaskState.QUEUED, "a task with no token is requeued"
                assert view.queue_position is not None
            else:
                assert view.state is TaskState.FAILED
                last = task.log.events[-1]
                assert last.kind is EventKind.ERROR and last.data["code"] == str(code)
                assert last.data["retriable"] is True
        self._assert_at_head([t for t, _, _ in running])

    def _assert_at_head(self, candidates: list[Submitted]) -> None:
        """The requeued ones among ``candidates`` wait at the head of their class."""
        requeued = {t.name for t in candidates if self._waiting(t)}
        for priority in Priority:
            line = sorted(
                (view.queue_position, t.name)
                for t in self.tasks
                if t.priority is priority
                and (view := self.queue.view(t.task_id)) is not None
                and view.queue_position is not None
            )
            names = [name for _, name in line]
            head = [name in requeued for name in names]
            assert head == sorted(head, reverse=True), "requeued tasks wait at the head"

    @rule()
    def drain(self) -> None:
        """A drain begins: nothing is dispatched and nothing admitted until resume."""
        start = self.driver.run(self.queue.set_draining, True)
        assert start.running == len(self._running())
        self.draining = True
        self.dispatched_when_drained = len(self.queue.dispatched)

    @precondition(lambda self: self.draining)
    @rule()
    def drain_deadline(self) -> None:
        """The deadline passed: tokenless running tasks go back to the head, in order; the
        others are cancelled (retriable)."""
        running = [(t, t.log.tokens, self.queue.view(t.task_id)) for t in self._running()]
        before = [
            (t, tokens, view)
            for t, tokens, view in running
            if view is not None and view.state is TaskState.RUNNING
        ]
        requeued, cancelled = self.driver.run(self.queue.stop_running)
        assert requeued + cancelled == len(before)
        for task, tokens, view in before:
            after = self.queue.view(task.task_id)
            assert after is not None and view is not None
            if tokens == 0 and view.attempts < MAX_ATTEMPTS:
                assert after.state is TaskState.QUEUED
            else:
                assert after.state is TaskState.CANCELLED
                last = task.log.events[-1]
                assert last.data["code"] == "CANCELLED" and last.data["retriable"] is True
                task.frozen_at = len(task.log.events)
        self._assert_at_head([t for t, _, _ in before])

    @precondition(lambda self: self.draining)
    @rule()
    def resume(self) -> None:
        self.driver.run(self.queue.set_draining, False)
        self.draining, self.dispatched_when_drained = False, None

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def reader_connects(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.tasks))
        reader = Reader(task.log)
        assert self.driver.nursery is not None
        self.driver.run(self.driver.nursery.start, reader.follow)
        self.readers.append((task, reader))

    @precondition(lambda self: any(r.scope and not r.done for _, r in self.readers))
    @rule(data=st.data(), resume=st.booleans())
    def reader_disconnects(self, data: st.DataObject, resume: bool) -> None:
        live = [(t, r) for t, r in self.readers if r.scope is not None and not r.done]
        _task, reader = data.draw(st.sampled_from(live))
        assert reader.scope is not None
        self.driver.run_sync(reader.scope.cancel)
        if resume:
            assert self.driver.nursery is not None
            self.driver.run(self.driver.nursery.start, reader.follow)

    @rule(seconds=st.sampled_from([0.3, 0.5, ORPHAN_GRACE_S + 0.1, RETENTION_S + 1]))
    def time_passes(self, seconds: float) -> None:
        self.driver.jump(seconds)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def no_interactive_task_waits_behind_a_silent_batch_task(self) -> None:
        """Once settled, no interactive task is next in line while a batch task that has
        sent nothing could be taken back from the engine's queue for it (issue 14)."""
        if not hasattr(self, "queue") or not self.ready or self.draining:
            return
        queue = self.queue
        running = queue._running
        victim = preemption.victim(running, queue._waiting.next_priority(), self.slots)
        assert running.taking_back or victim is None, (
            f"interactive waits behind {victim.id if victim else None}"
        )

    @invariant()
    def invariants_hold(self) -> None:
        if not hasattr(self, "queue"):
            return
        stats = self.queue.statistics()
        requeued = sum(1 for t in self.tasks if self._attempts(t) > 0 and self._waiting(t))
        assert stats.queue_depth <= 2 * CAPACITY + requeued
        # (the slot count may shrink under running sessions; never beyond 3 + backlog)
        assert stats.slots_busy <= max(stats.slots_total, 3) + self.backlog
        assert len(self.engine.calls) == stats.slots_busy
        # FIFO within a class: the first dispatches happen in submission order.
        first = self.queue.dispatched
        by_name = {t.name: t for t in self.tasks}
        for priority in Priority:
            mine = [n for n in first if n in by_name and by_name[n].priority is priority]
            order = [int(name.split("-")[1]) for name in mine]
            assert order == sorted(order), f"{priority} dispatch order {order}"
            submitted = [t for t in self.tasks if t.priority is priority]
            names = [t.name for t in submitted]
            for name in mine:  # every earlier task of its class has started or ended
                for earlier in submitted[: names.index(name)]:
                    assert earlier.name in first or earlier.log.closed
        self._check_picks()
        self._check_deadlines()
        self._check_sessions()
        self._check_slots()
        for task in self.tasks:
            self._check_log(task)
        for task, reader in self.readers:
            assert reader.seen == list(task.log.events[: len(reader.seen)])
            if reader.done:
                assert reader.seen == list(task.log.events)
        if self.dispatched_when_drained is not None:
            assert len(self.queue.dispatched) == self.dispatched_when_drained, (
                "dispatch while drained"
            )
            assert stats.pool.draining and stats.pool.health_state == "draining"
            assert not stats.pool.serving
        ended = sum(stats.ended.values())
        assert ended == sum(1 for t in self.tasks if t.log.closed)

    def _check_picks(self) -> None:
        """Interactive first; batch never waits through BATCH_EVERY dispatches in a row."""
        streak = 0
        for pick in self.queue.picks:
            assert pick.interactive_waiting + pick.batch_waiting >= 1
            if pick.batch_waiting == 0:
                expected, streak = Priority.INTERACTIVE, 0
            elif pick.interactive_waiting == 0 or streak >= BATCH_EVERY - 1:
                expected, streak = Priority.BATCH, 0
            else:
                expected, streak = Priority.INTERACTIVE, streak + 1
            assert pick.priority is expected, self.queue.picks
        picks = self.queue.picks
        for start in range(len(picks) - BATCH_EVERY + 1):
            window = picks[start : start + BATCH_EVERY]
            if all(p.batch_waiting > 0 for p in window):
                assert any(p.priority is Priority.BATCH for p in window), "batch starved"

    def _check_deadlines(self) -> None:
        now = self.driver.clock.current_time()
        for task in self.tasks:
            if task.deadline_at is not None and now >= task.deadline_at:
                assert task.log.closed, f"{task.name} outlived its deadline"
            if task.log.closed:
                last = task.log.events[-1]
                if last.kind is EventKind.ERROR and last.data["code"] == "DEADLINE_UNMET":
                    assert task.deadline_at is not None and now >= task.deadline_at
                    if task.frozen_at is None:
                        task.frozen_at = len(task.log.events)

    def _session_view(self, session: str) -> SessionView | None:
        return self.driver.run_sync(self.queue.session_view, session)

    def _check_slots(self) -> None:
        """Only a session's turns are pinned to a slot."""
        by_name = {t.name: t for t in self.tasks}
        for name, call in self.engine.calls.items():
            assert ("id_slot" in call.params) == (by_name[name].session is not None)

    def _check_sessions(self) -> None:
        """One turn at a time, each on its session's slot; budgets never overspent."""
        for session, tasks in self.session_tasks.items():
            assert sum(not t.log.closed for t in tasks) <= 1, f"{session}: two turns at once"
            assert sum(t.log.tokens for t in tasks) <= TOKEN_BUDGET, f"{session} overspent"
            view = self._session_view(session)
            if not tasks:
                assert view is None
                continue
            assert view is not None
            assert view.turns == len(tasks) <= MAX_TURNS
            assert view.tokens_out <= TOKEN_BUDGET
            assert view.wall_ms <= WALL_BUDGET_S * 1000 + 1, f"{session} ran past its budget"
            now = self.driver.clock.current_time()
            for task in tasks:
                task_view = self.queue.view(task.task_id)
                if task_view is not None and task_view.state is TaskState.RUNNING:
                    assert task_view.queue_wait_ms is not None
                    running_s = now - task.submitted_at - task_view.queue_wait_ms / 1000
                    spent_s = view.wall_ms / 1000 + running_s
                    assert spent_s <= WALL_BUDGET_S + 0.002, f"{session} runs past its budget"
                call = self.engine.calls.get(task.name)
                if call is not None:  # on its session's slot (as it was at dispatch)
                    assert 0 <= call.params["id_slot"] < 3
                last = task.log.events[-1] if task.log.closed else None
                if last is not None and last.data.get("code") == "BUDGET_EXCEEDED":
                    left = view.budget_left
                    assert left.tokens == 0 or (left.wall_s is not None and left.wall_s <= 1e-9)
                    if task.frozen_at is None:
                        task.frozen_at = len(task.log.events)

    def _attempts(self, task: Submitted) -> int:
        view = self.queue.view(task.task_id)
        return 0 if view is None else view.attempts

    def _waiting(self, task: Submitted) -> bool:
        view = self.queue.view(task.task_id)
        return view is not None and view.state is TaskState.QUEUED

    def _check_log(self, task: Submitted) -> None:
        events = task.log.events
        assert [e.id for e in events] == list(range(len(events)))
        kinds = [e.kind for e in events]
        terminal = [k for k in kinds if k in (EventKind.END, EventKind.ERROR)]
        assert len(terminal) <= 1
        if terminal:
            assert kinds[-1] in (EventKind.END, EventKind.ERROR)
            assert task.log.closed
        if kinds:
            assert kinds[0] in (EventKind.STARTED, EventKind.ERROR)
        assert kinds.count(EventKind.STARTED) <= 1
        tokens = [e.data["i"] for e in events if e.kind is EventKind.TOKEN]
        assert tokens == list(range(len(tokens)))
        if task.frozen_at is not None:
            assert len(events) == task.frozen_at, "the log changed after a cancel was answered"
        view = self.queue.view(task.task_id)
        if view is not None:
            # engine failures count up to MAX_ATTEMPTS; a preemption adds one dispatch, once
            assert view.attempts <= MAX_ATTEMPTS + 1
            assert view.state.terminal == task.log.closed


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestQueueStateful = QueueMachine.TestCase
