"""The v1 data plane through real Hypercorn, against the fake llama-server on loopback."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio.testing

from .harness import SSE, open_stack, parse_sse, tokens_seen


def kinds(events: list[SSE]) -> list[str]:
    return [e.event for e in events]


def text(events: list[SSE]) -> str:
    return "".join(e.data["t"] for e in events if e.event == "token")


# -- the happy path --------------------------------------------------------------------


async def test_submit_stream_end() -> None:
    async with open_stack() as stack:
        accepted = await stack.submit(prompt="hello there", max_tokens=5, seed=1)
        assert accepted["queue_position"] == 0
        assert accepted["predicted_start_ms"] == 0
        assert accepted["stream_url"] == f"/v1/tasks/{accepted['task_id']}/stream"
        events = await stack.stream(accepted["task_id"])
        assert kinds(events) == ["started"] + ["token"] * 5 + ["end"]
        assert [e.id for e in events] == list(range(7))
        assert [e.data["i"] for e in events if e.event == "token"] == [0, 1, 2, 3, 4]
        assert events[0].data["queue_position"] == 0
        assert "predicted_start_ms" in events[0].data
        assert events[-1].data["tokens_out"] == 5
        assert events[-1].data["decode_time_ms"] >= 0
        status = (await stack.client.get(f"/v1/tasks/{accepted['task_id']}")).json()
        assert status["state"] == "completed"
        assert status["tokens_out"] == 5
        # the engine got what the task asked for, and never X-Conversation-Id
        body = stack.fake.completion_bodies[-1]
        assert (body["prompt"], body["n_predict"], body["seed"]) == ("hello there", 5, 1)
        assert body["stream"] is True and body["cache_prompt"] is False
        assert all("x-conversation-id" not in h for h in stack.fake.completion_headers)


async def test_submit_and_stream_in_one_request() -> None:
    async with open_stack() as stack:
        sse = {"Accept": "text/event-stream"}
        body = {"prompt": "one trip", "max_tokens": 4, "seed": 3}
        response = await stack.client.post("/v1/tasks", json=body, headers=sse)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        task_id = response.headers["X-Task-Id"]
        assert response.headers["Location"] == f"/v1/tasks/{task_id}/stream"
        events = parse_sse(response.content)
        assert kinds(events) == ["started"] + ["token"] * 4 + ["end"]
        # the very same log as GET stream_url, which also resumes it
        assert await stack.stream(task_id) == events
        assert await stack.stream(task_id, last_event_id=2) == events[3:]
        # refusals stay JSON error envelopes
        bad = await stack.client.post("/v1/tasks", json={"max_tokens": 4}, headers=sse)
        assert bad.status_code == 400 and bad.json()["code"] == "INVALID_PARAMS"


async def test_capabilities_say_what_the_box_can_do() -> None:
    async with open_stack(slots=2, admission={"queue_capacity": 5}) as stack:
        caps = (await stack.client.get("/v1/capabilities")).json()
        assert caps["api_version"] == "1.1.0"
        assert caps["engines"] == [
            {"engine": "llamacpp", "engine_version": "b0-unknown", "mode": "attached"}
        ]
        assert caps["models"] == [
            {
                "id": "fake",
                "digest": None,
                "ctx_max": 1024,
                "pool": "default",
                "residency": "loaded",
            }
        ]
        [pool] = caps["pools"]
        assert pool["id"] == "default" and pool["ready"] and pool["slots_total"] == 2
        assert caps["limits"] == {
            "queue_capacity": 5, "batch_queue_capacity": 16, "max_tokens": 1024,
            "ctx_limit": 2048, "engine_backlog": 1, "rate_limits": None,
            "sessions": {
                "ttl_s": 1800.0, "max_turns": 100, "max_sessions": 1024, "token_budget": 0,
                "wall_budget_s": 0.0, "cost_per_token": 0.0, "cost_budget": 0.0,
            },
        }  # fmt: skip
        assert caps["features"]["priorities"] is True and caps["features"]["deadlines"] is True
        assert caps["features"]["sessions"] is True
        assert caps["features"]["stream_on_submit"] is True
        assert caps["features"]["owned_engine"] is False


async def test_same_seed_same_bytes() -> None:
    async with open_stack() as stack:
        first = await stack.submit(prompt="determinism", max_tokens=8, seed=42)
        second = await stack.submit(prompt="determinism", max_tokens=8, seed=42)
        assert text(await stack.stream(first["task_id"])) == text(
            await stack.stream(second["task_id"])
        )


async def test_correlation_id_is_echoed_or_made() -> None:
    async with open_stack() as stack:
        sent = await stack.client.get(
            "/v1/pools/default/health", headers={"X-Correlation-Id": "abc-1"}
        )
        assert sent.headers["X-Correlation-Id"] == "abc-1"
        made = await stack.client.get("/v1/tasks/nope")
        assert len(made.headers["X-Correlation-Id"]) == 36
        assert made.json()["correlation_id"] == made.headers["X-Correlation-Id"]
        bad = await stack.client.post(
            "/v1/tasks", content=b"{", headers={"X-Correlation-Id": "x y"}
        )
        assert bad.headers["X-Correlation-Id"] != "x y"  # not a valid id: a fresh one


async def test_health() -> None:
    async with open_stack(slots=2) as stack:
        health = (await stack.client.get("/v1/pools/default/health")).json()
        assert health["pool_id"] == "default"
        assert health["live"] is True and health["ready"] is True
        assert health["draining"] is False
        assert (health["slots_total"], health["slots_busy"], health["queue_depth"]) == (2, 0, 0)
        assert health["engine_version"] == "b0-unknown"
        missing = await stack.client.get("/v1/pools/other/health")
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


# -- errors ------------------------------------------------------------------------------


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["retriable"], bool)
    assert body["correlation_id"] == response.headers["X-Correlation-Id"]
    return body


async def test_invalid_params_name_every_field() -> None:
    async with open_stack() as stack:
        response = await stack.client.post(
            "/v1/tasks", json={"prompt": 1, "max_tokens": 0, "colour": "red"}
        )
        body = assert_envelope(response, 400, "INVALID_PARAMS")
        problems = body["problems"]
        assert isinstance(problems, list)
        assert sorted(p.split(":")[0] for p in problems) == ["colour", "max_tokens", "prompt"]
        bad_json = await stack.client.post("/v1/tasks", content=b"{nope")
        assert_envelope(bad_json, 400, "INVALID_PARAMS")


async def test_ctx_limit_exceeded_uses_the_engines_count() -> None:
    async with open_stack(admission={"ctx_limit": 64, "max_tokens_limit": 32}) as stack:
        fits = await stack.client.post("/v1/tasks", json={"prompt": "w " * 40, "max_tokens": 16})
        assert fits.status_code == 202  # 80 bytes, but 41 tokens + 16 <= 64
        response = await stack.client.post(
            "/v1/tasks", json={"prompt": "w " * 60, "max_tokens": 16}
        )
        body = assert_envelope(response, 400, "CTX_LIMIT_EXCEEDED")
        assert body["retriable"] is False


async def test_unknown_ids_and_routes_are_404() -> None:
    async with open_stack() as stack:
        for method, path in [
            ("GET", "/v1/tasks/nope"),
            ("GET", "/v1/tasks/nope/stream"),
            ("POST", "/v1/tasks/nope/cancel"),
            ("GET", "/v1/nothing-here"),
        ]:
            assert_envelope(await stack.client.request(method, path), 404, "NOT_FOUND")


async def test_task_id_is_idempotent_and_conflicts_are_409() -> None:
    async with open_stack() as stack:
        first = await stack.submit(prompt="p", max_tokens=2, task_id="job-7")
        again = await stack.submit(prompt="p", max_tokens=2, task_id="job-7")
        assert first["task_id"] == again["task_id"] == "job-7"
        other = await stack.client.post(
            "/v1/tasks", json={"prompt": "q", "max_tokens": 2, "task_id": "job-7"}
        )
        assert_envelope(other, 409, "CONFLICT")
        assert kinds(await stack.stream("job-7"))[-1] == "end"
        assert len(stack.fake.completion_bodies) == 1


async def test_queue_full_is_429_with_backoff_from_the_service_rate() -> None:
    no_backlog = {"engine_backlog": 0}
    async with open_stack(admission={"queue_capacity": 2}, adapter=no_backlog) as stack:
        done = await stack.submit(prompt="warm up", max_tokens=3)
        await stack.stream(done["task_id"])  # one observed service time
        hold = await stack.submit(prompt="[[hang:1]] hold", max_tokens=8)
        await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
        queued = [await stack.submit(prompt=f"q{i}", max_tokens=2) for i in range(2)]
        assert [q["queue_position"] for q in queued] == [0, 1]
        assert 0 < queued[0]["predicted_start_ms"] <= queued[1]["predicted_start_ms"]
        response = await stack.client.post("/v1/tasks", json={"prompt": "one too many"})
        body = assert_envelope(response, 429, "ADMISSION_REJECT")
        assert body["retriable"] is True
        assert body["policy_label"] == "queue_capacity"
        retry_ms = body["retry_after_ms"]
        assert isinstance(retry_ms, int) and retry_ms >= 1
        assert response.headers["X-Backoff-Ms"] == str(retry_ms)
        assert int(response.headers["Retry-After"]) == max(1, -(-retry_ms // 1000))
        await stack.client.post(f"/v1/tasks/{hold['task_id']}/cancel")
        for q in queued:
            assert kinds(await stack.stream(q["task_id"]))[-1] == "end"


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_running_frees_the_engine_and_freezes_the_log() -> None:
    async with open_stack(token_delay_s=0.01) as stack:
        running = await stack.submit(prompt="long one", max_tokens=500)
        waiting = await stack.submit(prompt="next", max_tokens=3)
        async with stack.live(running["task_id"]) as live:
            await live.until(tokens_seen(3))
            response = await stack.client.post(f"/v1/tasks/{running['task_id']}/cancel")
            assert response.status_code == 200
            assert response.json() == {"task_id": running["task_id"], "state": "cancelled"}
            events = await live.to_end()
        assert events[-1].event == "error"
        assert events[-1].data == {
            "code": "CANCELLED", "retriable": False, "message": "cancelled by the client"
        }  # fmt: skip
        # the engine connection was closed, which frees the slot; the next task runs
        await stack.fake.wait_until(lambda: stack.fake.disconnects == 1)
        assert kinds(await stack.stream(waiting["task_id"]))[-1] == "end"
        # a later reader sees the log exactly as it was frozen
        assert await stack.stream(running["task_id"]) == events
        again = await stack.client.post(f"/v1/tasks/{running['task_id']}/cancel")
        assert again.json()["state"] == "cancelled"
        status = (await stack.client.get(f"/v1/tasks/{running['task_id']}")).json()
        assert status["state"] == "cancelled" and status["error_code"] == "CANCELLED"


async def test_cancel_queued_removes_it() -> None:
    async with open_stack(adapter={"engine_backlog": 0}) as stack:
        hold = await stack.submit(prompt="[[hang:0]] hold", max_tokens=4)
        queued = await stack.submit(prompt="never runs", max_tokens=4)
        response = await stack.client.post(f"/v1/tasks/{queued['task_id']}/cancel")
        assert response.json()["state"] == "cancelled"
        assert kinds(await stack.stream(queued["task_id"])) == ["error"]
        await stack.client.post(f"/v1/tasks/{hold['task_id']}/cancel")
        await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)
        assert all(b["prompt"] != "never runs" for b in stack.fake.completion_bodies)


async def test_the_engine_backlog_waits_at_the_engine_and_stays_cancellable() -> None:
    async with open_stack(slots=1) as stack:  # engine_backlog = 1 by default
        hold = await stack.submit(prompt="[[hang:0]] hold", max_tokens=4)
        backlog = await stack.submit(prompt="waits at the engine", max_tokens=4)
        queued = await stack.submit(prompt="waits here", max_tokens=4)
        await stack.fake.wait_until(lambda: stack.fake.deferred == 1)
        states = [(await stack.client.get(f"/v1/tasks/{t['task_id']}")).json()["state"]
                  for t in (hold, backlog, queued)]  # fmt: skip
        assert states == ["running", "running", "queued"]
        # cancelling the one waiting inside the engine drops it there
        await stack.client.post(f"/v1/tasks/{backlog['task_id']}/cancel")
        await stack.fake.wait_until(lambda: stack.fake.deferred == 0)
        await stack.client.post(f"/v1/tasks/{hold['task_id']}/cancel")
        assert kinds(await stack.stream(queued["task_id"]))[-1] == "end"
        assert all(b["prompt"] != "waits at the engine" for b in stack.fake.completion_bodies[2:])


async def test_cancel_of_a_finished_task_says_how_it_ended() -> None:
    async with open_stack() as stack:
        done = await stack.submit(prompt="p", max_tokens=2)
        await stack.stream(done["task_id"])
        response = await stack.client.post(f"/v1/tasks/{done['task_id']}/cancel")
        assert response.status_code == 200 and response.json()["state"] == "completed"


# -- streams -----------------------------------------------------------------------------


async def test_resume_with_last_event_id_loses_and_repeats_nothing() -> None:
    async with open_stack(token_delay_s=0.002) as stack:
        task = await stack.submit(prompt="resume me", max_tokens=20, seed=3)
        async with stack.live(task["task_id"]) as live:
            first = await live.until(tokens_seen(4))
        rest = await stack.stream(task["task_id"], last_event_id=first[-1].id)
        whole = await stack.stream(task["task_id"])
        assert first + rest == whole
        assert kinds(whole)[-1] == "end"
        assert await stack.stream(task["task_id"], last_event_id=whole[-1].id) == []
        bad = await stack.client.get(task["stream_url"], headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


async def test_several_subscribers_see_the_same_events() -> None:
    async with open_stack(token_delay_s=0.002) as stack:
        task = await stack.submit(prompt="fan out", max_tokens=10)
        results: list[list[SSE]] = []

        async def read() -> None:
            results.append(await stack.stream(task["task_id"]))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(read)
        assert results[0] == results[1] == results[2]
        assert kinds(results[0])[-1] == "end"


async def test_reader_leaving_does_not_cancel_the_task() -> None:
    async with open_stack(token_delay_s=0.005) as stack:
        task = await stack.submit(prompt="keep going", max_tokens=15)
        async with stack.live(task["task_id"]) as live:
            await live.until(tokens_seen(1))
        status = await stack.wait_state(task["task_id"], "completed", "cancelled", "failed")
        assert status["state"] == "completed"
        assert status["tokens_out"] == 15


async def test_orphaned_task_is_cancelled_after_the_grace() -> None:
    async with open_stack(streams={"orphan_grace_ms": 50}) as stack:
        task = await stack.submit(prompt="[[hang:2]] orphan", max_tokens=50)
        async with stack.live(task["task_id"]) as live:
            await live.until(tokens_seen(1))
        status = await stack.wait_state(task["task_id"], "cancelled", "completed", "failed")
        assert status["state"] == "cancelled"
        events = await stack.stream(task["task_id"])
        assert "every reader left" in events[-1].data["message"]
        await stack.fake.wait_until(lambda: stack.fake.disconnects == 1)


async def test_task_without_reader_runs_and_waits_for_one() -> None:
    async with open_stack(streams={"orphan_grace_ms": 0}) as stack:
        task = await stack.submit(prompt="read me later", max_tokens=4)
        await stack.wait_state(task["task_id"], "completed")
        assert kinds(await stack.stream(task["task_id"]))[-1] == "end"


# -- engine failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "code", "retriable", "tokens"),
    [
        ("[[error-mid:2]] x", "WORKER_RESET", True, 2),
        ("[[drop:3]] x", "WORKER_RESET", True, 3),
        ("[[error-before:400]] x", "INVALID_PARAMS", False, 0),
    ],
)
async def test_engine_failures_end_the_stream_with_a_code(
    prompt: str, code: str, retriable: bool, tokens: int
) -> None:
    async with open_stack() as stack:
        task = await stack.submit(prompt=prompt, max_tokens=10)
        events = await stack.stream(task["task_id"])
        assert kinds(events).count("token") == tokens
        assert events[-1].event == "error"
        assert events[-1].data["code"] == code
        assert events[-1].data["retriable"] is retriable
        status = (await stack.client.get(f"/v1/tasks/{task['task_id']}")).json()
        assert status["state"] == "failed" and status["error_code"] == code


async def test_failure_before_the_first_token_is_retried_then_reported() -> None:
    async with open_stack() as stack:
        task = await stack.submit(prompt="[[error-before:500]] x", max_tokens=10)
        events = await stack.stream(task["task_id"])
        assert kinds(events) == ["started", "error"]
        assert events[-1].data["code"] == "WORKER_RESET"
        status = (await stack.client.get(f"/v1/tasks/{task['task_id']}")).json()
        assert status["attempts"] == 3
        assert len(stack.fake.completion_bodies) == 3


async def test_silent_engine_is_a_decode_timeout() -> None:
    async with open_stack(adapter={"decode_timeout_s": 0.2}) as stack:
        task = await stack.submit(prompt="[[hang:1]] x", max_tokens=10)
        events = await stack.stream(task["task_id"])
        assert kinds(events) == ["started", "token", "error"]
        assert events[-1].data["code"] == "DECODE_TIMEOUT"


async def test_loading_engine_gates_readiness() -> None:
    async with open_stack() as stack:
        stack.fake.set_loading(True)
        queue = stack.running.actors.queue
        with trio.fail_after(5):
            await queue.wait_ready(False)
        health = (await stack.client.get("/v1/pools/default/health")).json()
        assert health["ready"] is False
        assert health["last_error"] == "Loading model"
        response = await stack.client.post("/v1/tasks", json={"prompt": "p"})
        body = assert_envelope(response, 503, "POOL_UNREADY")
        assert body["retriable"] is True
        stack.fake.set_loading(False)
        with trio.fail_after(5):
            await queue.wait_ready()
        assert (await stack.client.post("/v1/tasks", json={"prompt": "p"})).status_code == 202


# -- shutdown ----------------------------------------------------------------------------


async def test_shutdown_refuses_new_work_and_lets_running_tasks_finish() -> None:
    async with open_stack(token_delay_s=0.01, shutdown_grace_s=30) as stack:
        task = await stack.submit(prompt="finish me", max_tokens=20)
        async with stack.live(task["task_id"]) as live:
            await live.until(tokens_seen(1))
            stack.stop.set()
            await trio.testing.wait_all_tasks_blocked()  # the drain has begun
            refused = await stack.client.post("/v1/tasks", json={"prompt": "late"})
            assert_envelope(refused, 503, "POOL_UNREADY")
            events = await live.to_end()
        assert events[-1].event == "end" and events[-1].data["tokens_out"] == 20


async def test_shutdown_cancels_what_outlives_the_grace() -> None:
    async with open_stack(shutdown_grace_s=0.1) as stack:
        task = await stack.submit(prompt="[[hang:1]] forever", max_tokens=20)
        async with stack.live(task["task_id"]) as live:
            await live.until(tokens_seen(1))
            stack.stop.set()
            last = (await live.to_end())[-1]
        assert last.event == "error"
        assert last.data["code"] == "CANCELLED" and last.data["retriable"] is True
        await stack.fake.wait_until(lambda: stack.fake.disconnects == 1)


async def test_bearer_token_when_required() -> None:
    async with open_stack(auth={"token": "s3cret", "optional": False}) as stack:
        assert_envelope(await stack.client.get("/v1/tasks/x"), 401, "UNAUTHORIZED")
        wrong = await stack.client.get("/v1/tasks/x", headers={"Authorization": "Bearer nope"})
        assert_envelope(wrong, 403, "FORBIDDEN")
        right = await stack.client.get("/v1/tasks/x", headers={"Authorization": "Bearer s3cret"})
        assert_envelope(right, 404, "NOT_FOUND")
        assert json.loads(right.content)["code"] == "NOT_FOUND"
