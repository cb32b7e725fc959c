"""``GET /metrics``, against the fake llama-server."""

from __future__ import annotations

from collections.abc import Mapping

import prometheus_client
import trio
from prometheus_client.parser import text_string_to_metric_families

from orchestra.metrics import SECONDS_BUCKETS

from .harness import SSE, Stack, open_stack

WAIT_S = 10.0
"""Bound on every wait for a condition (each is met in milliseconds)."""

Labels = frozenset[tuple[str, str]]


async def scrape(stack: Stack) -> dict[tuple[str, Labels], float]:
    """Every sample of ``/metrics``, keyed by sample name and labels."""
    response = await stack.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    assert "X-Correlation-Id" in response.headers
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Mapping[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def kinds(events: list[SSE]) -> list[str]:
    return [e.event for e in events]


# -- /metrics --------------------------------------------------------------------------------


async def test_metrics_parse_and_name_every_family() -> None:
    async with open_stack(slots=2, admission={"queue_capacity": 5}) as stack:
        response = await stack.client.get("/metrics")
        families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
        assert {name: kind for name, kind in families.items() if not name.endswith("_created")} == {
            "orchestra_queue_depth": "gauge",
            "orchestra_queue_capacity": "gauge",
            "orchestra_slots_busy": "gauge",
            "orchestra_slots_total": "gauge",
            "orchestra_engine_up": "gauge",
            "orchestra_replica_restarts": "counter",
            "orchestra_tasks_admitted": "counter",
            "orchestra_tasks_rejected": "counter",
            "orchestra_tasks_ended": "counter",
            "orchestra_tokens_out": "counter",
            "orchestra_time_to_first_token_seconds": "histogram",
            "orchestra_queue_wait_seconds": "histogram",
        }
        samples = await scrape(stack)
        assert value(samples, "orchestra_slots_total") == 2
        assert value(samples, "orchestra_queue_capacity") == 5
        assert value(samples, "orchestra_engine_up") == 1
        assert value(samples, "orchestra_replica_restarts_total") == 0
        assert value(samples, "orchestra_tasks_admitted_total") == 0
        for reason in ("ADMISSION_REJECT", "INVALID_PARAMS", "CTX_LIMIT_EXCEEDED", "POOL_UNREADY"):
            assert value(samples, "orchestra_tasks_rejected_total", reason=reason) == 0
        buckets = {
            float(dict(labels)["le"])
            for name, labels in samples
            if name == "orchestra_queue_wait_seconds_bucket"
        }
        assert buckets == {*SECONDS_BUCKETS, float("inf")}
    # every service has a registry of its own; the process-wide default one is left alone
    assert b"orchestra_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


async def test_completed_tasks_move_the_counters_and_histograms() -> None:
    async with open_stack() as stack:
        for i in range(3):
            task = await stack.submit(prompt=f"task {i}", max_tokens=5)
            assert kinds(await stack.stream(task["task_id"]))[-1] == "end"
        samples = await scrape(stack)
        assert value(samples, "orchestra_tasks_admitted_total") == 3
        assert value(samples, "orchestra_tasks_ended_total", outcome="completed", code="") == 3
        assert value(samples, "orchestra_tokens_out_total") == 15
        assert value(samples, "orchestra_queue_wait_seconds_count") == 3
        assert value(samples, "orchestra_time_to_first_token_seconds_count") == 3
        assert value(samples, "orchestra_time_to_first_token_seconds_bucket", le="+Inf") == 3
        assert 0 < value(samples, "orchestra_time_to_first_token_seconds_sum") < 3 * WAIT_S
        assert value(samples, "orchestra_slots_busy") == 0
        assert value(samples, "orchestra_queue_depth") == 0


async def test_rejections_are_counted_by_reason() -> None:
    async with open_stack(admission={"ctx_limit": 64, "max_tokens_limit": 32}) as stack:
        bad = await stack.client.post("/v1/tasks", json={"prompt": "hi", "max_tokens": 0})
        assert bad.status_code == 400
        not_json = await stack.client.post("/v1/tasks", content=b"{")
        assert not_json.status_code == 400
        too_long = await stack.client.post(
            "/v1/tasks", json={"prompt": "w " * 60, "max_tokens": 16}
        )
        assert too_long.json()["code"] == "CTX_LIMIT_EXCEEDED"
        stack.fake.set_loading(True)
        stack.running.actors.supervisor.probe_now("test: the engine is loading")
        with trio.fail_after(WAIT_S):
            await stack.running.actors.queue.wait_ready(False)
        unready = await stack.client.post("/v1/tasks", json={"prompt": "hi", "max_tokens": 2})
        assert unready.json()["code"] == "POOL_UNREADY"
        samples = await scrape(stack)
        assert value(samples, "orchestra_tasks_rejected_total", reason="INVALID_PARAMS") == 2
        assert value(samples, "orchestra_tasks_rejected_total", reason="CTX_LIMIT_EXCEEDED") == 1
        assert value(samples, "orchestra_tasks_rejected_total", reason="POOL_UNREADY") == 1
        assert value(samples, "orchestra_tasks_admitted_total") == 0
        assert value(samples, "orchestra_engine_up") == 0


async def test_queue_full_cancels_and_gauges() -> None:
    no_backlog = {"engine_backlog": 0}
    async with open_stack(admission={"queue_capacity": 1}, adapter=no_backlog) as stack:
        hold = await stack.submit(prompt="[[hang:1]] hold", max_tokens=8)
        with trio.fail_after(WAIT_S):
            await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
        queued = await stack.submit(prompt="waits", max_tokens=2)
        full = await stack.client.post("/v1/tasks", json={"prompt": "one too many"})
        assert full.status_code == 429
        samples = await scrape(stack)
        assert value(samples, "orchestra_tasks_rejected_total", reason="ADMISSION_REJECT") == 1
        assert value(samples, "orchestra_tasks_admitted_total") == 2
        assert value(samples, "orchestra_queue_depth") == 1
        assert value(samples, "orchestra_slots_busy") == 1
        assert value(samples, "orchestra_queue_wait_seconds_count") == 1  # only hold started

        async with stack.live(hold["task_id"]) as live:  # hold has streamed its one token
            await live.until(lambda events: "token" in kinds(events))
        for task in (queued, hold):
            await stack.client.post(f"/v1/tasks/{task['task_id']}/cancel")
        with trio.fail_after(WAIT_S):
            await stack.running.actors.queue.wait_idle()
        samples = await scrape(stack)
        cancelled = value(
            samples, "orchestra_tasks_ended_total", outcome="cancelled", code="CANCELLED"
        )
        assert cancelled == 2
        assert value(samples, "orchestra_tasks_ended_total", outcome="completed", code="") == 0
        assert value(samples, "orchestra_tokens_out_total") == 1
        assert value(samples, "orchestra_time_to_first_token_seconds_count") == 0
        assert value(samples, "orchestra_slots_busy") == 0
        assert value(samples, "orchestra_queue_depth") == 0


async def test_a_failed_task_is_counted_with_its_code() -> None:
    async with open_stack() as stack:
        task = await stack.submit(prompt="[[drop:2]] dies after two tokens", max_tokens=8)
        events = await stack.stream(task["task_id"])
        assert events[-1].data["code"] == "WORKER_RESET"
        samples = await scrape(stack)
        assert (
            value(samples, "orchestra_tasks_ended_total", outcome="failed", code="WORKER_RESET")
            == 1
        )
        assert value(samples, "orchestra_tokens_out_total") == 2


async def test_each_service_counts_its_own() -> None:
    async with open_stack() as first, open_stack() as second:
        task = await first.submit(prompt="only here", max_tokens=3)
        await first.stream(task["task_id"])
        assert value(await scrape(first), "orchestra_tasks_admitted_total") == 1
        assert value(await scrape(second), "orchestra_tasks_admitted_total") == 0
