"""Stateful property test of the Models actor: several models, their Queues and
supervisors whose every step the test decides, under a MockClock.

Hypothesis drives random interleavings of: arrivals for each model, task completions and
client cancels, loads that succeed, fail or crash, an engine that crashes while serving,
idle timers (time jumps), loads and unloads asked by hand (forced or not). After every
step it checks:

- the memory of the live engine processes never exceeds the budget (checked at each
  process start, which is when it grows);
- a model's next process never starts before its previous one exited;
- no pool with running or waiting tasks is unloaded for being idle or evicted (checked
  where the unload begins, in the Queue's step, including when a task arrives in the same
  step as the idle timer fires), and no pool is stopped with tasks running, nor a
  ``keep_loaded`` one at all, except by an unload asked by hand;
- every task ends exactly once (one terminal event, last in its log);
- at the end, with every load let through and every task let finish, no task is left
  waiting: an arrival during an unload or a failed load was served by a later load.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any

import attrs
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestra.actors.models import Models
from orchestra.actors.pools import ModelSpec, Pool
from orchestra.actors.queue import Queue
from orchestra.actors.queue_messages import UnloadMode
from orchestra.errors import EngineStartError, ErrorCode, Refusal
from orchestra.events import EventKind, EventLog
from orchestra.messages import Doorbell, EngineAlarm
from orchestra.obs.metrics import Metrics
from orchestra.pool import ReplicaState, ReplicaStatus, Residency
from orchestra.task import TaskRequest

from .test_queue_stateful import ScriptedEngine
from .trio_driver import TrioDriver

BUDGET_MB = 800
SLOTS = 2
SPECS = (
    ModelSpec("a", memory_mb=300, idle_unload_s=60.0),
    ModelSpec("b", memory_mb=500, idle_unload_s=30.0),
    ModelSpec("c", memory_mb=400, idle_unload_s=0.0),
    ModelSpec("k", memory_mb=200, keep_loaded=True),
)
NAMES = tuple(spec.id for spec in SPECS)
TERMINAL = (EventKind.END, EventKind.ERROR)


@attrs.define
class World:
    """What the fake processes did, for the invariants."""

    live: dict[str, int] = attrs.field(factory=dict)
    """Live processes: model → memory."""
    starts: dict[str, int] = attrs.field(factory=dict)
    violations: list[str] = attrs.field(factory=list)
    forced: collections.Counter[str] = attrs.field(factory=collections.Counter)
    """Models an unload was asked for by hand (and not yet seen to stop)."""
    queues: dict[str, Queue] = attrs.field(factory=dict)

    def started(self, model: str, memory: int) -> None:
        if model in self.live:
            self.violations.append(f"{model}: started while its previous process lives")
        if sum(self.live.values()) + memory > BUDGET_MB:
            self.violations.append(f"{model}: start takes {self.live} + {memory} past the budget")
        self.live[model] = memory
        self.starts[model] = self.starts.get(model, 0) + 1

    def stopping(self, model: str, keep_loaded: bool) -> None:
        """A process is being stopped (its life cancelled)."""
        if self.forced[model]:
            return
        q = self.queues[model].statistics()
        if q.slots_busy:
            self.violations.append(f"{model}: stopped with {q.slots_busy} task(s) running")
        if keep_loaded:
            self.violations.append(f"{model}: keep_loaded, stopped without being asked")

    def exited(self, model: str) -> None:
        self.live.pop(model, None)


@attrs.frozen
class Summary:
    restarts: int = 0
    pid: None = None
    props: None = None
    engine_version: str = "fake"
    model_digest: str = ""
    model_path: str = ""


@attrs.define
class FakeSupervisor:
    """One model's engine: each life waits for the test to say how its load goes."""

    spec: ModelSpec
    queue: Queue
    world: World
    commands: trio.MemorySendChannel[str] | None = None
    ready: bool = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[str](16)
        self.world.started(self.spec.id, self.spec.memory_mb)
        self.commands, self.ready = send, False
        try:
            task_status.started()
            await self.queue.replica_status(ReplicaStatus(ReplicaState.STARTING, 0, "loading"))
            async for command in receive:
                if command == "fail" and not self.ready:
                    raise EngineStartError("the model did not load: bad file")
                if command == "ready" and not self.ready:
                    await self.queue.replica_status(ReplicaStatus(ReplicaState.READY, SLOTS, "ok"))
                    self.ready = True
                if command == "crash" and self.ready:
                    await self.queue.replica_lost(ErrorCode.WORKER_RESET, "crashed")
                    await self.queue.replica_status(ReplicaStatus(ReplicaState.READY, SLOTS, "ok"))
        except trio.Cancelled:
            self.world.stopping(self.spec.id, self.spec.keep_loaded)
            raise
        finally:
            self.commands, self.ready = None, False
            self.world.exited(self.spec.id)

    def statistics(self) -> Summary:
        return Summary()

    def pids(self) -> list[int]:
        return []

    replicas = ()


class WatchedQueue(Queue):
    """The Queue, reporting an idle unload that began while the pool had work."""

    violations: list[str]

    def _begin_unload(self, mode: UnloadMode) -> tuple[bool, int]:
        busy = self.statistics().queue_depth + self.statistics().slots_busy
        began, cancelled = super()._begin_unload(mode)
        if began and mode == "idle" and busy:
            self.violations.append(f"{self.pool_id}: evicted or idle-unloaded with {busy} task(s)")
        return began, cancelled


@attrs.define
class Submitted:
    model: str
    task_id: str
    log: EventLog


class ModelsMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.tasks: list[Submitted] = []
        self.counter = 0
        self.k_asked = False
        self.driver = TrioDriver()
        self.world = World()
        self.doorbell = Doorbell()
        self.engines: dict[str, ScriptedEngine] = {}
        self.supervisors: dict[str, FakeSupervisor] = {}
        pools = []
        for spec in SPECS:
            engine = ScriptedEngine()
            queue = WatchedQueue(
                capacity=8,
                engine=engine,
                retention_s=10_000,
                orphan_grace_s=10_000,
                alarm=EngineAlarm(),
                pool_id=spec.id,
                doorbell=self.doorbell,
                residency=Residency.UNLOADED,
            )
            queue.violations = self.world.violations
            supervisor = FakeSupervisor(spec, queue, self.world)
            self.engines[spec.id] = engine
            self.supervisors[spec.id] = supervisor
            self.world.queues[spec.id] = queue
            pools.append(Pool(spec, queue, supervisor, None))  # type: ignore[arg-type]
        self.models = Models(pools, BUDGET_MB, "a", self.doorbell, Metrics(), measure=False)

        async def boot() -> None:
            nursery = self.driver.nursery
            assert nursery is not None
            for pool in pools:
                await nursery.start(pool.queue.run)
            await nursery.start(self.models.run)

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
        """Let every load through and every task finish: nothing may be left waiting."""
        for _ in range(200):
            if all(t.log.closed for t in self.tasks):
                break
            for name in NAMES:
                self._command(name, "ready")
                for call in list(self.engines[name].calls.values()):
                    self.driver.run_sync(call.send.send_nowait, ("end", None))
            self.driver.jump(1.0)
        waiting = [t for t in self.tasks if not t.log.closed]
        assert not waiting, f"tasks left waiting: {[(t.model, t.task_id) for t in waiting]}"
        self.invariants_hold()

    # -- helpers ---------------------------------------------------------------------

    def _command(self, model: str, command: str) -> None:
        commands = self.supervisors[model].commands
        if commands is not None:
            self.driver.run_sync(commands.send_nowait, command)

    def _in_background(self, fn: Any, *args: Any) -> None:
        async def call() -> None:
            with contextlib.suppress(Refusal):
                await fn(*args)

        assert self.driver.nursery is not None
        self.driver.run_sync(self.driver.nursery.start_soon, call)

    # -- rules -----------------------------------------------------------------------

    def _arrive(self, model: str, jump_s: float = 0.0) -> None:
        """Submit a task for ``model``; with ``jump_s``, the clock jumps in the same step
        (before the Models actor can act on a timer that fires)."""
        self.counter += 1
        pool = self.models.route(model)
        request = TaskRequest(prompt=f"t{self.counter}", max_tokens=8)

        async def submit() -> str | None:
            self.driver.clock.jump(jump_s)
            try:
                admitted = await pool.queue.submit(request, "")
            except Refusal:
                return None
            return admitted.task_id

        task_id = self.driver.run(submit)
        if task_id is not None:
            log = pool.queue.log_of(task_id)
            assert log is not None
            self.tasks.append(Submitted(model, task_id, log))

    @rule(model=st.sampled_from(NAMES))
    def arrive(self, model: str) -> None:
        self._arrive(model)

    @rule(model=st.sampled_from(NAMES), seconds=st.sampled_from([30.0, 60.0, 61.0]))
    def arrive_as_the_idle_timer_fires(self, model: str, seconds: float) -> None:
        """The race of an idle unload: the timer fires and a task arrives in one step."""
        self._arrive(model, seconds)

    @rule(model=st.sampled_from(NAMES), fate=st.sampled_from(["ready", "fail", "crash"]))
    def engine_step(self, model: str, fate: str) -> None:
        self._command(model, fate)

    @rule(model=st.sampled_from(NAMES), how=st.sampled_from(["end", "cancel"]))
    def finish_one(self, model: str, how: str) -> None:
        calls = list(self.engines[model].calls.values())
        if not calls:
            return
        call = calls[0]
        if how == "end":
            self.driver.run_sync(call.send.send_nowait, ("tokens", ["x"]))
            self.driver.run_sync(call.send.send_nowait, ("end", None))
        else:
            queue = self.models.pool(model).queue
            running = [t for t in self.tasks if t.model == model and not t.log.closed]
            if running:
                self.driver.run(queue.cancel, running[0].task_id)

    @rule(seconds=st.sampled_from([0.5, 10.0, 31.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.driver.jump(seconds)

    @rule(model=st.sampled_from(NAMES), force=st.booleans())
    def unload_by_hand(self, model: str, force: bool) -> None:
        # Asked by hand, it may stop a pool with work: a forced one cancels its running
        # tasks, a drain's deadline cancels those still running then.
        self.world.forced[model] += 1
        if model == "k":
            self.k_asked = True

        async def unload() -> None:
            try:
                await self.models.unload(model, force=force)
            except Refusal:
                pass
            finally:
                self.world.forced[model] -= 1

        assert self.driver.nursery is not None
        self.driver.run_sync(self.driver.nursery.start_soon, unload)

    @rule(model=st.sampled_from(NAMES))
    def load_by_hand(self, model: str) -> None:
        self._in_background(self.models.load, model)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def invariants_hold(self) -> None:
        if not hasattr(self, "world"):
            return
        assert not self.world.violations, self.world.violations
        assert sum(self.world.live.values()) <= BUDGET_MB
        for task in self.tasks:
            events = task.log.events
            terminal = [e for e in events if e.kind in TERMINAL]
            assert len(terminal) <= 1, f"{task.task_id} ended {len(terminal)} times"
            if terminal:
                assert events[-1] is terminal[0], "an event after the terminal one"
                assert task.log.closed
        resident = self.models.resident_mb()
        assert resident <= BUDGET_MB, f"resident {resident} MiB"

    @precondition(lambda self: hasattr(self, "models"))
    @invariant()
    def keep_loaded_is_loading_or_loaded(self) -> None:
        state = self.driver.run_sync(self.models.state, "k").residency
        if state is Residency.LOADED:
            self.k_asked = False
        elif not self.k_asked:  # only an unload asked by hand takes it out
            assert state in (Residency.LOADING, Residency.FAILED), state


ModelsMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestModelsStateful = ModelsMachine.TestCase


async def test_an_idle_unload_asked_behind_an_arrival_does_not_begin() -> None:
    """The Models actor planned an idle unload from a snapshot taken before a task
    arrived: the Queue applies the arrival first and refuses the unload in its own step."""
    queue = Queue(capacity=4, engine=ScriptedEngine(), retention_s=60, orphan_grace_s=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ok"))
        submitted: list[str] = []

        async def arrive() -> None:
            admitted = await queue.submit(TaskRequest(prompt="t1", max_tokens=4), "")
            submitted.append(admitted.task_id)

        nursery.start_soon(arrive)
        await trio.testing.wait_all_tasks_blocked()  # the Submit is in the inbox first
        assert await queue.begin_unload("idle") == (False, 0)
        assert submitted and queue.statistics().pool.residency is Residency.LOADED
        assert await queue.begin_unload("drain") == (True, 0)
        assert queue.statistics().pool.residency is Residency.UNLOADING
        nursery.cancel_scope.cancel()


def _machine() -> ModelsMachine:
    machine = ModelsMachine()
    machine.start()
    return machine


def _residency(machine: ModelsMachine, model: str) -> Residency:
    return machine.driver.run_sync(machine.models.state, model).residency


def test_a_model_loaded_by_hand_long_after_its_last_task_stays_loaded() -> None:
    machine = _machine()
    try:
        machine.arrive("a")
        machine.engine_step("a", "ready")
        machine.finish_one("a", "end")
        machine.time_passes(61.0)  # idle past its idle_unload_s (60 s): unloaded
        assert _residency(machine, "a") is Residency.UNLOADED
        machine.time_passes(500.0)
        machine.load_by_hand("a")
        machine.engine_step("a", "ready")
        assert _residency(machine, "a") is Residency.LOADED  # idle from its load on
        machine.time_passes(61.0)
        assert _residency(machine, "a") is Residency.UNLOADED
        machine.invariants_hold()
    finally:
        machine.teardown()


def test_an_unload_whose_caller_leaves_still_finishes() -> None:
    machine = _machine()
    try:
        machine.arrive("a")
        machine.engine_step("a", "ready")  # the task runs (its engine call waits)

        async def unload_then_leave() -> None:
            with trio.move_on_after(1.0):  # the client disconnects while it drains
                await machine.models.unload("a")

        assert machine.driver.nursery is not None
        machine.driver.run_sync(machine.driver.nursery.start_soon, unload_then_leave)
        machine.time_passes(1.0)
        assert _residency(machine, "a") is Residency.UNLOADING
        machine.finish_one("a", "end")  # the drain ends: the engine stops
        assert _residency(machine, "a") is Residency.UNLOADED
        assert "a" not in machine.world.live
        machine.invariants_hold()
    finally:
        machine.teardown()
