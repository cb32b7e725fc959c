"""Stateful property test of a pool's dispatch across several replicas.

Hypothesis drives a Queue over two or three scripted replicas (each an engine of its own)
through random interleavings of: submits (some turns of sessions), tokens and ends on the
streams in flight, a stream that loses its engine, a replica that dies (its supervisor's
``replica_lost``), goes down or suspect, recovers with a new slot count, all under a
MockClock. After every step it checks:

- nothing is dispatched to a replica that is not ready, and no replica runs more than its
  slots plus the backlog;
- no task runs twice at once, and a task that streamed a token is never dispatched again;
- a session's turn goes to the replica of its last turn while that replica stayed ready;
- the pool is ready exactly when some replica is;
- at the end every task has ended, exactly once, with its terminal event last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestra.actors.queue import Queue
from orchestra.actors.queue_messages import ReplicaLink
from orchestra.config import SessionsConfig
from orchestra.engine.protocol import Completion, EngineProps, HealthProbe, TokenSink
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.events import EventKind, EventLog
from orchestra.pool import ReplicaState, ReplicaStatus
from orchestra.scheduling.figures import QueueFigures
from orchestra.scheduling.sessions import SessionBook
from orchestra.task import TaskRequest

from .trio_driver import TrioDriver

SESSIONS = ("s0", "s1", "s2")


@attrs.define
class Call:
    prompt: str
    replica: int
    send: trio.MemorySendChannel[tuple[str, Any]]
    tokens: int = 0


@attrs.define
class World:
    """What the test knows: each replica's state as last reported, the calls in flight."""

    states: list[ReplicaState]
    slots: list[int]
    backlog: int
    epochs: list[int]
    """Per replica, how many times it stopped being ready."""
    calls: dict[tuple[str, int], Call] = attrs.field(factory=dict)
    """(prompt, replica) → the call in flight there (a task requeued from a replica that
    died may start on another while its old call there is still closing)."""
    streamed: set[str] = attrs.field(factory=set)
    """Prompts that sent a token: never dispatched again."""
    session_of: dict[str, str] = attrs.field(factory=dict)
    """Prompt → session, for the session's turns."""
    last_turn: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    """Session → (replica, that replica's epoch) of its last dispatched turn."""
    violations: list[str] = attrs.field(factory=list)

    def not_ready(self, replica: int, state: ReplicaState) -> None:
        if self.states[replica] is ReplicaState.READY and state is not ReplicaState.READY:
            self.epochs[replica] += 1
        self.states[replica] = state

    def dispatched(self, prompt: str, replica: int) -> None:
        if self.states[replica] is not ReplicaState.READY:
            self.violations.append(f"{prompt} went to replica {replica}, which is not ready")
        if prompt in self.streamed:
            self.violations.append(f"{prompt} streamed a token and was dispatched again")
        on_it = sum(1 for c in self.calls.values() if c.replica == replica) + 1
        if on_it > self.slots[replica] + self.backlog:
            self.violations.append(f"replica {replica} runs {on_it} > its room")
        session = self.session_of.get(prompt)
        if session is not None:
            last = self.last_turn.get(session)
            if last is not None and last[1] == self.epochs[last[0]] and last[0] != replica:
                self.violations.append(
                    f"{session}'s turn {prompt} went to replica {replica}, not {last[0]}"
                )
            self.last_turn[session] = (replica, self.epochs[replica])


@attrs.define
class ReplicaEngine:
    """A scripted engine that tells the world where each call lands."""

    index: int
    world: World

    async def health(self) -> HealthProbe:
        return HealthProbe(True, "ok")

    async def props(self) -> EngineProps:
        return EngineProps(self.world.slots[self.index], 2048, "test", "test.gguf")

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, params: Mapping[str, Any], on_token: TokenSink) -> Completion:
        prompt = params["prompt"]
        self.world.dispatched(prompt, self.index)
        send, receive = trio.open_memory_channel[tuple[str, Any]](16)
        call = Call(prompt, self.index, send)
        self.world.calls[prompt, self.index] = call
        try:
            async for step, arg in receive:
                if step == "token":
                    on_token("t")
                    call.tokens += 1
                    self.world.streamed.add(prompt)
                    if call.tokens == params["n_predict"]:
                        return Completion(call.tokens, 1.0, "limit", slot=params.get("id_slot"))
                elif step == "end":
                    return Completion(call.tokens, 1.0, "eos", slot=params.get("id_slot"))
                elif step == "fail":
                    raise arg
            raise AssertionError("script channel closed")
        finally:
            del self.world.calls[prompt, self.index]

    async def erase_slot(self, slot: int) -> bool:
        return True


@attrs.define
class Submitted:
    name: str
    task_id: str
    log: EventLog
    session: str | None


class ReplicasMachine(RuleBasedStateMachine):
    @initialize(
        slots=st.lists(st.integers(1, 2), min_size=2, max_size=3), backlog=st.integers(0, 1)
    )
    def start(self, slots: list[int], backlog: int) -> None:
        self.driver = TrioDriver()
        count = len(slots)
        self.world = World([ReplicaState.READY] * count, list(slots), backlog, [0] * count)
        links = tuple(ReplicaLink(f"m/{i}", ReplicaEngine(i, self.world)) for i in range(count))
        self.queue = Queue(
            capacity=32,
            batch_capacity=32,
            replicas=links,
            retention_s=10_000,
            orphan_grace_s=10_000,
            engine_backlog=backlog,
            pool_id="m",
            sessions=SessionBook(SessionsConfig(ttl_s=10_000, max_turns=1000)),
        )
        self.tasks: list[Submitted] = []
        self.counter = 0

        async def boot() -> None:
            assert self.driver.nursery is not None
            await self.driver.nursery.start(self.queue.run)
            for i, n in enumerate(slots):
                await self.queue.replica_status(ReplicaStatus(ReplicaState.READY, n, "ok"), i)

        self.driver.run(boot)

    def teardown(self) -> None:
        driver = getattr(self, "driver", None)
        if driver is None:
            return
        try:
            for i in range(len(self.world.states)):
                self._report(i, ReplicaState.READY, max(self.world.slots[i], 1))
            for _ in range(4 * len(self.tasks) + 4):
                if not self.world.calls:
                    break
                for call in list(self.world.calls.values()):
                    self.driver.run_sync(call.send.send_nowait, ("end", None))
            assert not self.world.calls
            for task in self.tasks:
                assert task.log.closed, f"{task.name} never ended"
            self.invariants_hold()
        finally:
            driver.close()

    def _report(self, replica: int, state: ReplicaState, slots: int) -> None:
        self.world.not_ready(replica, state)
        self.world.slots[replica] = (
            slots if state is ReplicaState.READY else self.world.slots[replica]
        )
        status = ReplicaStatus(state, slots if state is ReplicaState.READY else 0, str(state))
        self.driver.run(self.queue.replica_status, status, replica)

    def _live_sessions(self) -> set[str]:
        return {t.session for t in self.tasks if t.session is not None and not t.log.closed}

    # -- rules ------------------------------------------------------------------------------

    @rule(session=st.sampled_from((None, *SESSIONS)), max_tokens=st.integers(1, 3))
    def submit(self, session: str | None, max_tokens: int) -> None:
        if session in self._live_sessions():
            return  # a session runs one turn at a time
        self.counter += 1
        name = f"p{self.counter}"
        request = TaskRequest(prompt=name, max_tokens=max_tokens, session_id=session)
        try:
            admitted = self.driver.run(self.queue.submit, request, name)
        except Refusal as refused:
            assert refused.code in (ErrorCode.POOL_UNREADY, ErrorCode.POOL_UNAVAILABLE)
            assert not any(s is ReplicaState.READY for s in self.world.states)
            return
        log = self.queue.log_of(admitted.task_id)
        assert log is not None
        if session is not None:
            self.world.session_of[name] = session
        self.tasks.append(Submitted(name, admitted.task_id, log, session))

    @rule(data=st.data(), step=st.sampled_from(("token", "end")))
    def engine_step(self, data: st.DataObject, step: str) -> None:
        if not self.world.calls:
            return
        call = data.draw(st.sampled_from(sorted(self.world.calls.values(), key=lambda c: c.prompt)))
        self.driver.run_sync(call.send.send_nowait, (step, None))

    @rule(data=st.data())
    def stream_loses_its_engine(self, data: st.DataObject) -> None:
        """The connection breaks: the Queue takes the replica out until a probe says."""
        if not self.world.calls:
            return
        call = data.draw(st.sampled_from(sorted(self.world.calls.values(), key=lambda c: c.prompt)))
        self.world.not_ready(call.replica, ReplicaState.STARTING)
        error = EngineError(ErrorCode.WORKER_RESET, "connection lost", retriable=True)
        self.driver.run_sync(call.send.send_nowait, ("fail", error))

    @rule(replica=st.integers(0, 2))
    def replica_dies(self, replica: int) -> None:
        if replica >= len(self.world.states):
            return
        self.world.not_ready(replica, ReplicaState.STARTING)
        self.driver.run(self.queue.replica_lost, ErrorCode.WORKER_RESET, "killed", replica)
        self._report(replica, ReplicaState.STARTING, 0)
        assert not any(c.replica == replica for c in self.world.calls.values())

    @rule(
        replica=st.integers(0, 2),
        state=st.sampled_from((ReplicaState.DOWN, ReplicaState.SUSPECT, ReplicaState.UNAVAILABLE)),
    )
    def replica_out(self, replica: int, state: ReplicaState) -> None:
        if replica < len(self.world.states):
            self._report(replica, state, 0)

    @rule(replica=st.integers(0, 2), slots=st.integers(1, 3))
    def replica_recovers(self, replica: int, slots: int) -> None:
        if replica < len(self.world.states):
            self._report(replica, ReplicaState.READY, slots)

    @rule()
    def time_passes(self) -> None:
        self.driver.jump(1.0)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        assert not self.world.violations, self.world.violations
        prompts = [prompt for prompt, _ in self.world.calls]
        assert len(prompts) == len(set(prompts)), f"a task runs twice at once: {prompts}"
        pool = self.queue.statistics().pool
        assert pool.ready == any(s is ReplicaState.READY for s in self.world.states)
        for task in self.tasks:
            events = task.log.events_from(0)
            terminal = [e for e in events if e.kind in (EventKind.END, EventKind.ERROR)]
            assert len(terminal) <= 1
            if terminal:
                assert events[-1] is terminal[0] and task.log.closed


ReplicasMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_replica_dispatch = ReplicasMachine.TestCase


@pytest.mark.parametrize("slots", [(1, 1), (2, 1, 1)])
def test_the_replica_with_most_free_slots_goes_first_equals_in_turn(slots: tuple[int, ...]) -> None:
    """Dispatch fills the replica with the most free room, equals taking turns."""
    driver = TrioDriver()
    try:
        world = World([ReplicaState.READY] * len(slots), list(slots), 0, [0] * len(slots))
        links = tuple(ReplicaLink(f"m/{i}", ReplicaEngine(i, world)) for i in range(len(slots)))
        queue = Queue(capacity=16, replicas=links, retention_s=60, orphan_grace_s=60, pool_id="m")

        async def boot() -> None:
            assert driver.nursery is not None
            await driver.nursery.start(queue.run)
            for i, n in enumerate(slots):
                await queue.replica_status(ReplicaStatus(ReplicaState.READY, n, "ok"), i)

        driver.run(boot)
        order = []
        for n in range(sum(slots)):
            driver.run(queue.submit, TaskRequest(prompt=f"p{n}", max_tokens=4), f"p{n}")
            [replica] = [r for p, r in world.calls if p == f"p{n}"]
            order.append(replica)
        if slots == (1, 1):
            assert order == [0, 1]
        else:
            assert order == [0, 1, 2, 0]  # replica 0 had 2 free, then all equal: in turn
        assert not world.violations
        for call in list(world.calls.values()):
            driver.run_sync(call.send.send_nowait, ("end", None))
    finally:
        driver.close()


def test_a_turn_behind_a_blocked_turn_still_goes_to_its_own_replica() -> None:
    """The head of the line is a session's turn whose replica is full; the next turn,
    of a session on another replica with room, goes to that replica, not to the one with
    the most room."""
    driver = TrioDriver()
    try:
        slots = [1, 1, 2]
        world = World([ReplicaState.READY] * 3, list(slots), 0, [0] * 3)
        links = tuple(ReplicaLink(f"m/{i}", ReplicaEngine(i, world)) for i in range(3))
        queue = Queue(capacity=16, replicas=links, retention_s=60, orphan_grace_s=60, pool_id="m")

        def report(index: int, state: ReplicaState) -> None:
            world.not_ready(index, state)
            ready = state is ReplicaState.READY
            status = ReplicaStatus(state, slots[index] if ready else 0, str(state))
            driver.run(queue.replica_status, status, index)

        def submit(name: str, session: str | None) -> None:
            if session is not None:
                world.session_of[name] = session
            request = TaskRequest(prompt=name, max_tokens=4, session_id=session)
            driver.run(queue.submit, request, name)

        def end(name: str) -> None:
            [call] = [c for (p, _), c in world.calls.items() if p == name]
            driver.run_sync(call.send.send_nowait, ("end", None))

        async def boot() -> None:
            assert driver.nursery is not None
            await driver.nursery.start(queue.run)

        driver.run(boot)
        for i in range(3):
            report(i, ReplicaState.READY)
        submit("p1", "s0")  # s0 lives on m/0
        end("p1")
        submit("p2", "s1")  # s1 on m/1
        end("p2")
        report(0, ReplicaState.STARTING)
        report(2, ReplicaState.STARTING)
        submit("p3", None)  # fills m/1, the only one ready
        report(0, ReplicaState.READY)
        report(2, ReplicaState.READY)
        submit("p4", "s1")  # waits: m/1 is full
        submit("p5", "s0")  # m/0 has room (m/2 has more)
        assert {p: r for p, r in world.calls} == {"p3": 1, "p5": 0}
        assert not world.violations
        for name in ("p3", "p5", "p4"):
            end(name)
    finally:
        driver.close()


def test_predictions_count_each_ready_replica_by_its_measured_speed() -> None:
    """A replica whose tasks hold a slot a third as long counts as three slots; one not
    measured yet counts as the mean; one replica counts its slots exactly."""
    alone = QueueFigures()
    for hold_s in (0.5, 2.0, 1.0):
        alone.served("m/0", hold_s)
    assert alone.effective_slots({"m/0": 3}) == 3
    figures = QueueFigures()
    for _ in range(40):  # both well measured: the means have settled
        figures.served("m/0", 1.0)
        figures.served("m/1", 3.0)
    pool_s = figures.rate.mean_service_s
    assert figures.effective_slots({"m/0": 1, "m/1": 1}) == round(pool_s / 1.0 + pool_s / 3.0)
    fast_only = figures.effective_slots({"m/0": 1})
    slow_only = figures.effective_slots({"m/1": 1})
    assert fast_only > slow_only >= 1
    assert figures.effective_slots({"m/0": 1, "m/2": 2}) == round(pool_s / 1.0 + 2)
    assert figures.effective_slots({}) == 0
    assert figures.retry_ms(figures.effective_slots({"m/0": 1})) < figures.retry_ms(slow_only)
