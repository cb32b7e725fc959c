"""One pool state with one writer: what health says is what admission does.

The defect (issue 14): a stream lost its engine (``kill -9`` of llama-server at the fourth
token); the client saw the task end with ``WORKER_RESET``, asked health, got ``ready:
true``, submitted, and got 503 ``POOL_UNREADY`` "llama-server killed by SIGKILL", because
the supervisor's report of the dead process reached the Queue between the two requests.
The Queue knew the engine might be gone (it held dispatch) yet said ready. These tests
drive that interleaving step by step, then check the rule for every pool state.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from orchestra.actors.queue import Queue
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.messages import EngineAlarm
from orchestra.pool import PoolState, PoolStatus, ReplicaState, ReplicaStatus
from orchestra.task import TaskRequest

from .test_queue_stateful import ScriptedEngine


async def _ready_queue(nursery: trio.Nursery, engine: ScriptedEngine, alarm: EngineAlarm) -> Queue:
    queue = Queue(capacity=4, engine=engine, retention_s=60.0, orphan_grace_s=60.0, alarm=alarm)
    await nursery.start(queue.run)
    await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ready"))
    return queue


async def _submit(queue: Queue, name: str) -> str | Refusal:
    try:
        return (await queue.submit(TaskRequest(prompt=name, max_tokens=16), name)).task_id
    except Refusal as refusal:
        return refusal


async def test_a_pool_that_says_ready_admits_the_next_task(nursery: trio.Nursery) -> None:
    engine, alarm = ScriptedEngine(), EngineAlarm()
    queue = await _ready_queue(nursery, engine, alarm)
    first = await _submit(queue, "first")
    assert isinstance(first, str)
    await trio.testing.wait_all_tasks_blocked()
    call = engine.calls["first"]
    call.send.send_nowait(("tokens", ["a", "b", "c", "d"]))
    lost = EngineError(ErrorCode.WORKER_RESET, "connection lost mid-stream", retriable=True)
    call.send.send_nowait(("fail", lost))
    log = queue.log_of(first)
    assert log is not None
    while not log.closed:  # the client reads its stream to the end: WORKER_RESET
        await log.wait_beyond(len(log))
    assert log.events[-1].data["code"] == "WORKER_RESET"

    health_ready = queue.statistics().pool.serving  # GET /v1/pools/default/health
    # The supervisor notices the process exit now, between the client's two requests.
    await queue.replica_lost(ErrorCode.WORKER_RESET, "llama-server killed by SIGKILL")
    second = await _submit(queue, "second")

    assert not health_ready or isinstance(second, str), (
        f"health said ready, then the submission was refused: {second}"
    )
    assert not health_ready  # not ready from the moment a stream lost the engine...
    assert alarm.is_raised()  # ...with the supervisor asked to probe it
    assert isinstance(second, Refusal) and second.code is ErrorCode.POOL_UNREADY

    # The supervisor restarted the engine: ready again, and admitting again.
    await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ready"))
    assert queue.statistics().pool.serving
    assert isinstance(await _submit(queue, "third"), str)


async def test_a_stream_that_lost_the_engine_holds_the_pool_until_the_probe(
    nursery: trio.Nursery,
) -> None:
    """The probe finds the engine alive (it only dropped one stream): ready again, and the
    task that had sent no token runs again."""
    engine, alarm = ScriptedEngine(), EngineAlarm()
    queue = await _ready_queue(nursery, engine, alarm)
    task_id = await _submit(queue, "task")
    assert isinstance(task_id, str)
    await trio.testing.wait_all_tasks_blocked()
    lost = EngineError(ErrorCode.WORKER_RESET, "connection lost", retriable=True)
    engine.calls["task"].send.send_nowait(("fail", lost))
    await trio.testing.wait_all_tasks_blocked()
    stats = queue.statistics()
    assert not stats.pool.serving and stats.pool.health_state == "starting"
    assert "probing" in stats.pool.detail
    assert "task" not in engine.calls  # nothing is dispatched while the pool is not ready
    refused = await _submit(queue, "meanwhile")
    assert isinstance(refused, Refusal) and refused.code is ErrorCode.POOL_UNREADY
    await queue.replica_status(ReplicaStatus(ReplicaState.READY, 1, "ready"))  # the probe
    await trio.testing.wait_all_tasks_blocked()
    assert queue.statistics().pool.serving
    assert "task" in engine.calls  # requeued (no token yet) and dispatched again


@given(
    state=st.sampled_from(PoolState),
    refusing=st.booleans(),
    draining=st.booleans(),
    detail=st.text(max_size=20),
)
def test_serving_is_exactly_no_refusal(
    state: PoolState, refusing: bool, draining: bool, detail: str
) -> None:
    """Health's ``ready`` and admission read the same value, and agree on every one."""
    pool = PoolStatus(state, detail, refusing, draining)
    refusal = pool.refusal()
    assert pool.serving == (refusal is None)
    if refusal is not None:
        assert refusal.code in (ErrorCode.POOL_UNREADY, ErrorCode.POOL_UNAVAILABLE)
        assert refusal.retriable and refusal.retry_after_ms is not None
    assert pool.health_state == ("draining" if refusing or draining else str(state))
