"""Scheduling against a live server (fake engine): priorities, per-class capacity,
deadlines at admission, in the queue and while running, and the prediction-error record."""

from __future__ import annotations

from typing import Any

import trio

from .harness import Stack, open_stack

ONE_SLOT: dict[str, Any] = {"adapter": {"engine_backlog": 0}, "shutdown_grace_s": 0.0}
HANG = "[[hang:1]] holds its slot"
"""The fake engine sends one token, then nothing until the task is cancelled."""


async def _hold_the_slot(stack: Stack, task_id: str = "hog") -> None:
    await stack.submit(prompt=HANG, max_tokens=50, task_id=task_id)
    await stack.wait_state(task_id, "running")


async def test_interactive_goes_first_and_batch_gets_its_turn() -> None:
    async with open_stack(admission={"batch_every": 2}, **ONE_SLOT) as stack:
        await _hold_the_slot(stack)
        order = ["b1", "b2", "i1", "i2", "i3"]
        for task_id in order:
            priority = "batch" if task_id.startswith("b") else "interactive"
            await stack.submit(prompt=task_id, max_tokens=2, task_id=task_id, priority=priority)
        positions = {
            t: (await stack.client.get(f"/v1/tasks/{t}")).json()["queue_position"] for t in order
        }
        # batch_every 2: one interactive, then a batch one, while both wait
        assert positions == {"i1": 0, "b1": 1, "i2": 2, "b2": 3, "i3": 4}
        await stack.client.post("/v1/tasks/hog/cancel")
        for task_id in order:
            events = await stack.stream(task_id)
            assert events[-1].event == "end"
        sent = [body["prompt"] for body in stack.fake.completion_bodies]  # engine's order
        assert sent == [HANG, "i1", "b1", "i2", "b2", "i3"]


async def test_each_class_has_its_own_capacity() -> None:
    admission = {"queue_capacity": 1, "batch_queue_capacity": 2}
    async with open_stack(admission=admission, **ONE_SLOT) as stack:
        await _hold_the_slot(stack)
        await stack.submit(prompt="x", max_tokens=1, priority="interactive")
        refused = await stack.client.post("/v1/tasks", json={"prompt": "x", "max_tokens": 1})
        assert refused.status_code == 429
        assert refused.json()["policy_label"] == "queue_capacity"
        for _ in range(2):
            await stack.submit(prompt="x", max_tokens=1, priority="batch")
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "x", "max_tokens": 1, "priority": "batch"}
        )
        body = refused.json()
        assert refused.status_code == 429 and body["policy_label"] == "batch_queue_capacity"
        assert "batch queue is full (2 tasks waiting)" in body["message"]
        limits = (await stack.client.get("/v1/capabilities")).json()["limits"]
        assert (limits["queue_capacity"], limits["batch_queue_capacity"]) == (1, 2)


async def test_a_deadline_the_prediction_already_misses_is_refused_at_once() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        await _hold_the_slot(stack)  # the next task waits at least one service time (1 s)
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "x", "max_tokens": 4, "deadline_ms": 300}
        )
        body = refused.json()
        assert refused.status_code == 504 and body["code"] == "DEADLINE_UNMET"
        assert body["retriable"] is True and body["policy_label"] == "deadline"
        assert stack.running.actors.queue.statistics().queue_depth == 0  # nothing admitted


async def test_a_queued_task_whose_deadline_passes_is_removed() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        await _hold_the_slot(stack)
        await stack.submit(prompt="x", max_tokens=4, task_id="late", deadline_ms=1200)
        with trio.fail_after(10):
            events = await stack.stream("late")
        assert [e.event for e in events] == ["error"]  # it never started
        assert events[-1].data["code"] == "DEADLINE_UNMET"
        assert "passed before the task started" in events[-1].data["message"]
        view = (await stack.client.get("/v1/tasks/late")).json()
        assert view["state"] == "failed" and view["error_code"] == "DEADLINE_UNMET"
        assert stack.running.actors.queue.statistics().queue_depth == 0


async def test_a_running_task_is_cut_at_its_deadline_and_sends_nothing_after() -> None:
    async with open_stack(token_delay_s=0.02, **ONE_SLOT) as stack:
        await stack.submit(prompt="x", max_tokens=500, task_id="cut", deadline_ms=400)
        with trio.fail_after(10):
            events = await stack.stream("cut")
        kinds = [e.event for e in events]
        assert kinds[0] == "started" and kinds[-1] == "error" and "token" in kinds
        assert events[-1].data["code"] == "DEADLINE_UNMET"
        tokens = kinds.count("token")
        assert 0 < tokens < 500
        await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)  # the slot is freed
        assert len(await stack.stream("cut")) == len(events)  # nothing was added later
        done = await stack.submit(prompt="y", max_tokens=3)
        assert (await stack.stream(done["task_id"]))[-1].event == "end"


async def test_prediction_errors_are_recorded_in_replicasets_and_metrics() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        for n in range(3):
            task = await stack.submit(prompt="x", max_tokens=2, task_id=f"p{n}")
            assert (await stack.stream(task["task_id"]))[-1].event == "end"
        replica = (await stack.client.get("/v1/replicasets")).json()["replicasets"][0]["replicas"][
            0
        ]
        predicted = replica["predicted_start"]
        assert predicted["samples"] == 3 and predicted["abs_error_ms_p50"] is not None
        text = (await stack.client.get("/metrics")).text
        assert 'orchestra_predicted_start_error_seconds_count{model="default"} 3.0' in text
