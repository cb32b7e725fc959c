"""A pool over several replicas, against the fake engine: owned replicas started as
llama-server, and attached ones served in-process. One replica's failure ends or requeues
its own tasks only; the pool stays ready while another replica is; an attached replica
that hangs is ``suspect`` until a probe task completes on it, one that stops answering is
``down`` and comes back by itself."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from orchestra.config import ConfigError
from orchestra.service import run_service
from orchestra.testing.fake_llama import FakeLlamaServer

from .harness import make_config
from .models_harness import WAIT_S, free_ports, open_models


def _replica_of(stack: Any, task_id: str) -> str | None:
    queue = stack.models.find(task_id)
    return queue._table.get(task_id).replica  # type: ignore[no-any-return]


async def _replicas(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    [replicaset] = (await client.get("/v1/replicasets")).json()["replicasets"]
    replicas: list[dict[str, Any]] = replicaset["replicas"]
    return replicas


async def _wait_states(client: httpx.AsyncClient, queue: Any, *states: str) -> list[dict[str, Any]]:
    """``/v1/replicasets``'s replicas once they are in ``states``: read again at each
    report of a replica's state to the pool's Queue (at most WAIT_S in all)."""
    with trio.fail_after(WAIT_S):
        while True:
            changed = queue.next_replica_change()
            replicas = await _replicas(client)
            if [r["state"] for r in replicas] == list(states):
                return replicas
            await changed.wait()


async def test_two_owned_replicas_one_killed_mid_stream(tmp_path: Path) -> None:
    models = {"m": {"replicas": 2, "keep_loaded": True}}
    settings = {"m": {"token_delay_ms": 20}}
    async with open_models(tmp_path, models, settings) as stack:
        await stack.wait_residency("m", "loaded")
        queue = stack.models.pool("m").queue
        await _wait_states(stack.client, queue, "ready", "ready")
        a = await stack.submit("m", max_tokens=400)
        await stack.wait_token(a["task_id"])
        b = await stack.submit("m", max_tokens=100)
        await stack.wait_token(b["task_id"])
        c = await stack.submit("m", max_tokens=4)  # waits in an engine's backlog
        on = {t["task_id"]: _replica_of(stack, t["task_id"]) for t in (a, b, c)}
        assert on[a["task_id"]] != on[b["task_id"]], on
        assert on[c["task_id"]] == on[a["task_id"]]  # equal room: in turn, after b's
        pool = stack.models.pool("m")
        [killed] = [r for r in pool.supervisor.replicas if r.id == on[a["task_id"]]]
        pid = killed.supervisor.statistics().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        ended = await stack.end_of(a["task_id"])
        assert ended["state"] == "failed" and ended["error_code"] == "WORKER_RESET"
        health = (await stack.client.get("/v1/pools/m/health")).json()
        assert health["ready"] is True  # the other replica serves
        done_c = await stack.end_of(c["task_id"])  # requeued (no token yet), ran on b's
        assert done_c["state"] == "completed" and done_c["attempts"] == 2
        assert _replica_of(stack, c["task_id"]) == on[b["task_id"]]
        done_b = await stack.end_of(b["task_id"])
        assert done_b["state"] == "completed" and done_b["tokens_out"] == 100
        replicas = await _wait_states(stack.client, queue, "ready", "ready")  # restarted
        assert [r["restarts"] for r in replicas if r["id"] == killed.id] == [1]
        metrics = (await stack.client.get("/metrics")).text
        assert (
            f'orchestra_replica_engine_restarts_total{{model="m",replica="{killed.id}"}} 1.0'
            in metrics
        )
    started = [pid for kind, pid in stack.files["m"].lives() if kind == "start"]
    assert len(started) == 3  # two, and the killed one's restart
    for pid in started:  # nothing left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def _serve(nursery: trio.Nursery, fake: FakeLlamaServer, port: int) -> trio.CancelScope:
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await fake.serve(port=port, task_status=task_status)

    await nursery.start(serve)
    return scope


async def test_attached_replicas_hang_go_down_and_come_back(tmp_path: Path) -> None:
    fakes = [FakeLlamaServer(total_slots=1), FakeLlamaServer(total_slots=1)]
    port = free_ports(3)
    urls = [f"http://127.0.0.1:{port + 1 + i}" for i in range(2)]
    config = make_config(
        f"http://127.0.0.1:{port}",
        adapter={"decode_timeout_s": 0.5, "engine_backlog": 0},
        models={"m": {"endpoints": urls, "keep_loaded": True}},
    )
    async with trio.open_nursery() as engines:
        scopes = [await _serve(engines, fake, port + 1 + i) for i, fake in enumerate(fakes)]
        stop = trio.Event()
        async with trio.open_nursery() as service:
            running = await service.start(partial(run_service, config, stop=stop))
            queue = running.actors.models.pool("m").queue
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=WAIT_S) as client:
                await _hang_down_and_back(client, queue, fakes, scopes, engines, port, urls)
            stop.set()
        engines.cancel_scope.cancel()


async def _end(queue: Any, task_id: str) -> Any:
    log = queue.log_of(task_id)
    with trio.fail_after(WAIT_S):
        while not log.closed:
            await log.wait_beyond(len(log))
    return queue._table.get(task_id)


async def _hang_down_and_back(
    client: httpx.AsyncClient,
    queue: Any,
    fakes: list[FakeLlamaServer],
    scopes: list[trio.CancelScope],
    engines: trio.Nursery,
    port: int,
    urls: list[str],
) -> None:
    replicas = await _wait_states(client, queue, "ready", "ready")
    assert [(r["kind"], r["endpoint"]) for r in replicas] == [
        ("attached", urls[0]),
        ("attached", urls[1]),
    ]
    # A stream that goes silent after a token: the task fails DECODE_TIMEOUT and its
    # replica is suspect; the probe task is slowed past the timeout too, so it stays so.
    body = {"model_ref": "m", "prompt": "x [[hang:1]]", "max_tokens": 8}
    hung = (await client.post("/v1/tasks", json=body)).json()
    task = await _end(queue, hung["task_id"])
    assert task.error_code == "DECODE_TIMEOUT"
    hung_on = int(task.replica.split("/")[1])
    other = 1 - hung_on
    fakes[hung_on].token_delay_s = 5.0
    states = ["ready", "ready"]
    states[hung_on] = "suspect"
    await _wait_states(client, queue, *states)
    assert (await client.get("/v1/pools/m/health")).json()["ready"] is True
    for _ in range(3):  # nothing goes to the suspect replica
        sent = (await client.post("/v1/tasks", json={"model_ref": "m", "prompt": "p"})).json()
        task = await _end(queue, sent["task_id"])
        assert task.replica == f"m/{other}" and task.state == "completed"
    fakes[hung_on].token_delay_s = 0.0  # the next probe task completes
    await _wait_states(client, queue, "ready", "ready")
    # Stop answering: down after a few failed probes; the other one serves meanwhile.
    scopes[other].cancel()
    states = ["ready", "ready"]
    states[other] = "down"
    await _wait_states(client, queue, *states)
    assert (await client.get("/v1/pools/m/health")).json()["ready"] is True
    scopes[other] = await _serve(engines, fakes[other], port + 1 + other)
    await _wait_states(client, queue, "ready", "ready")
    metrics = (await client.get("/metrics")).text
    line = (
        f'orchestra_replica_state{{kind="attached",model="m",replica="m/{other}",'
        f'state="ready"}} 1.0'
    )
    assert line in metrics


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"replicas": 0}, "models.m.replicas: 0 and no endpoints"),
        ({"replicas": 2, "devices": ["0"]}, "models.m.devices: 1 entries for 2"),
        ({"endpoints": ["box2:8081"]}, 'models.m.endpoints: [0] "box2:8081" is not on this'),
        ({"openai_endpoints": ["http://vllm:8000"]}, "models.m.slots: required"),
        (
            {"engine": "openai", "replicas": 1, "endpoints": ["http://v:1"], "slots": 4},
            "models.m.replicas: orchestra starts llama-server only",
        ),
        ({"rpc_servers": ["nohost"]}, "models.m.rpc_servers: [0] must be host:port"),
    ],
)
def test_replica_configuration_errors_name_their_key(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config("http://127.0.0.1:8081", models={"m": table})
    assert any(line.startswith(problem) for line in raised.value.problems), raised.value.problems


async def test_owned_replicas_get_their_devices_ports_and_a_share_of_the_threads(
    tmp_path: Path,
) -> None:
    models = {"m": {"replicas": 2, "threads": 4, "devices": ["0", "1,2"], "keep_loaded": True}}
    async with open_models(tmp_path, models) as stack:
        await stack.wait_residency("m", "loaded")
        queue = stack.models.pool("m").queue
        replicas = await _wait_states(stack.client, queue, "ready", "ready")
        base = int(stack.config.adapter.endpoint.rsplit(":", 1)[1])
        assert [r["endpoint"] for r in replicas] == [
            f"http://127.0.0.1:{base}",
            f"http://127.0.0.1:{base + 1}",
        ]
        for replica, devices in zip(replicas, ["0", "1,2"], strict=True):
            pid = replica["pid"]
            argv = (await trio.Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")
            raw = await trio.Path(f"/proc/{pid}/environ").read_bytes()
            environ = dict(entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
            assert argv[argv.index(b"-t") + 1] == b"2"  # 4 threads, split in two
            assert environ[b"CUDA_VISIBLE_DEVICES"] == devices.encode()
            assert replica["kind"] == "owned" and replica["slots_total"] == 1
