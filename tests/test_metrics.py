"""``GET /metrics`` and the ``metrics`` stream events, against the fake llama-server."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import prometheus_client
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from orchestra.obs.metrics import SECONDS_BUCKETS
from orchestra.scheduling import progress

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
    """A sample's value; every series has a ``model`` label (``default`` here)."""
    labels.setdefault("model", "default")
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
            "orchestra_predicted_start_error_seconds": "histogram",
            "orchestra_model_loaded": "gauge",
            "orchestra_model_memory_bytes": "gauge",
            "orchestra_model_loads": "counter",
            "orchestra_model_load_seconds": "histogram",
            "orchestra_model_evictions": "counter",
            "orchestra_model_unloads": "counter",
            "orchestra_replica_state": "gauge",
            "orchestra_replica_slots_total": "gauge",
            "orchestra_replica_slots_busy": "gauge",
            "orchestra_replica_engine_restarts": "counter",
            "orchestra_replica_tokens_out": "counter",
        }
        samples = await scrape(stack)
        assert value(samples, "orchestra_slots_total") == 2
        assert value(samples, "orchestra_queue_capacity") == 5
        assert value(samples, "orchestra_engine_up") == 1
        assert value(samples, "orchestra_replica_restarts_total") == 0
        assert value(samples, "orchestra_replica_slots_total", replica="default/0") == 2
        ready = {"replica": "default/0", "kind": "attached", "state": "ready"}
        assert value(samples, "orchestra_replica_state", **ready) == 1
        assert value(samples, "orchestra_tasks_admitted_total", face="v1") == 0
        for reason in ("ADMISSION_REJECT", "INVALID_PARAMS", "CTX_LIMIT_EXCEEDED", "POOL_UNREADY"):
            assert value(samples, "orchestra_tasks_rejected_total", reason=reason, face="v1") == 0
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
        assert value(samples, "orchestra_tasks_admitted_total", face="v1") == 3
        assert (
            value(samples, "orchestra_tasks_ended_total", outcome="completed", code="", face="v1")
            == 3
        )
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
        # A body that does not parse names no model: its refusal has an empty model label.
        invalid = {"reason": "INVALID_PARAMS", "face": "v1", "model": ""}
        assert value(samples, "orchestra_tasks_rejected_total", **invalid) == 2
        assert (
            value(samples, "orchestra_tasks_rejected_total", reason="CTX_LIMIT_EXCEEDED", face="v1")
            == 1
        )
        assert (
            value(samples, "orchestra_tasks_rejected_total", reason="POOL_UNREADY", face="v1") == 1
        )
        assert value(samples, "orchestra_tasks_admitted_total", face="v1") == 0
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
        assert (
            value(samples, "orchestra_tasks_rejected_total", reason="ADMISSION_REJECT", face="v1")
            == 1
        )
        assert value(samples, "orchestra_tasks_admitted_total", face="v1") == 2
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
            samples, "orchestra_tasks_ended_total", outcome="cancelled", code="CANCELLED", face="v1"
        )
        assert cancelled == 2
        assert (
            value(samples, "orchestra_tasks_ended_total", outcome="completed", code="", face="v1")
            == 0
        )
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
            value(
                samples,
                "orchestra_tasks_ended_total",
                outcome="failed",
                code="WORKER_RESET",
                face="v1",
            )
            == 1
        )
        assert value(samples, "orchestra_tokens_out_total") == 2


async def test_each_service_counts_its_own() -> None:
    async with open_stack() as first, open_stack() as second:
        task = await first.submit(prompt="only here", max_tokens=3)
        await first.stream(task["task_id"])
        assert value(await scrape(first), "orchestra_tasks_admitted_total", face="v1") == 1
        assert value(await scrape(second), "orchestra_tasks_admitted_total", face="v1") == 0


# -- metrics stream events -------------------------------------------------------------------


def check_metrics_frames(events: list[SSE], *, deadline: bool) -> list[SSE]:
    """The ``metrics`` events of a stream, each checked: right after a token whose count is
    a multiple of ``EVERY_TOKENS``, with the documented fields."""
    frames = []
    for before, event in itertools.pairwise(events):
        if event.event != "metrics":
            continue
        frames.append(event)
        assert before.event == "token"
        assert (before.data["i"] + 1) % progress.EVERY_TOKENS == 0
        expected = {"queue_depth", "tokens_per_s"} | (
            {"on_time_probability"} if deadline else set()
        )
        assert set(event.data) == expected
        assert isinstance(event.data["queue_depth"], int) and event.data["queue_depth"] >= 0
        assert event.data["tokens_per_s"] > 0
        if deadline:
            assert 0 <= event.data["on_time_probability"] <= 1
    return frames


async def test_a_task_that_asks_gets_metrics_frames() -> None:
    async with open_stack() as stack:
        task = await stack.submit(prompt="with metrics", max_tokens=20, metrics=True)
        events = await stack.stream(task["task_id"])
        frames = check_metrics_frames(events, deadline=False)
        assert frames and frames[0].id == 9  # started, eight tokens, then the first one
        assert [e.data["i"] for e in events if e.event == "token"] == list(range(20))
        assert events[-1].event == "end" and events[-1].data["tokens_out"] == 20
        assert [e.id for e in events] == list(range(len(events)))
        # a late reader and a resumed one see the same events
        assert await stack.stream(task["task_id"]) == events
        assert await stack.stream(task["task_id"], last_event_id=8) == events[9:]


async def test_with_a_deadline_the_frames_say_how_likely_it_is_met() -> None:
    async with open_stack() as stack:
        roomy = await stack.submit(prompt="roomy", max_tokens=16, metrics=True, deadline_ms=600_000)
        frames = check_metrics_frames(await stack.stream(roomy["task_id"]), deadline=True)
        assert frames and frames[0].data["on_time_probability"] > 0.99


async def test_metrics_frames_report_the_queue_depth() -> None:
    no_backlog = {"engine_backlog": 0}
    async with open_stack(adapter=no_backlog) as stack:
        hold = await stack.submit(prompt="[[hang:0]] hold", max_tokens=4)
        task = await stack.submit(prompt="watched", max_tokens=8, metrics=True)
        waiting = [await stack.submit(prompt=f"w{i}", max_tokens=1) for i in range(2)]
        await stack.client.post(f"/v1/tasks/{hold['task_id']}/cancel")
        events = await stack.stream(task["task_id"])  # it ran while the other two waited
        [frame] = check_metrics_frames(events, deadline=False)
        assert frame.data["queue_depth"] == 2
        for other in waiting:
            assert kinds(await stack.stream(other["task_id"]))[-1] == "end"


async def test_frames_never_push_out_tokens_or_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)  # a frame after every 8th token
    async with open_stack() as stack:
        task = await stack.submit(prompt="many frames", max_tokens=64, metrics=True)
        events = await stack.stream(task["task_id"])
        assert len(check_metrics_frames(events, deadline=False)) == 64 // progress.EVERY_TOKENS
        assert kinds(events).count("token") == 64
        assert events[-1].event == "end"


@pytest.mark.parametrize("asked", [{}, {"metrics": False}, {"metrics": None}])
async def test_a_task_that_does_not_ask_gets_no_metrics_frames(asked: dict[str, object]) -> None:
    async with open_stack() as stack:
        task = await stack.submit(prompt="plain", max_tokens=20, deadline_ms=60_000, **asked)
        events = await stack.stream(task["task_id"])
        assert kinds(events) == ["started"] + ["token"] * 20 + ["end"]


async def test_the_metrics_field_is_validated_strictly() -> None:
    async with open_stack() as stack:
        for bad in ("yes", 1, 0, [True]):
            response = await stack.client.post(
                "/v1/tasks", json={"prompt": "hi", "max_tokens": 2, "metrics": bad}
            )
            assert response.status_code == 400
            [problem] = response.json()["problems"]
            assert problem.startswith("metrics: must be true or false")
        samples = await scrape(stack)
        invalid = {"reason": "INVALID_PARAMS", "face": "v1", "model": ""}
        assert value(samples, "orchestra_tasks_rejected_total", **invalid) == 4
