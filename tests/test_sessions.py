"""Sessions against a live server (fake engine): slot pinning and cache reuse, one turn at
a time, budgets (turns, tokens, wall time, cost), DELETE, and the SessionBook's own rules
(TTL, slot choice) with explicit times."""

from __future__ import annotations

from typing import Any

import pytest

from orchestra.config import SessionsConfig
from orchestra.scheduling.record import Task
from orchestra.scheduling.sessions import SessionBook
from orchestra.task import TaskRequest

from .harness import Stack, open_stack

HANG = "[[hang:1]] holds its slot"
"""The fake engine sends one token, then nothing until the task is cancelled."""


async def _turn(stack: Stack, prompt: str, **body: Any) -> tuple[str, list[Any]]:
    submitted = await stack.submit(prompt=prompt, **body)
    events = await stack.stream(submitted["task_id"])
    return "".join(e.data["t"] for e in events if e.event == "token"), events


async def _session(stack: Stack, session_id: str) -> dict[str, Any]:
    response = await stack.client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_session_keeps_its_slot_and_reuses_its_prefix() -> None:
    async with open_stack(slots=2) as stack:
        first = "You are a helpful assistant. User: name three rivers."
        reply, _ = await _turn(
            stack, first, max_tokens=4, session_id="chat", determinism="best_effort"
        )
        second = f"{first}{reply} User: and three lakes?"
        await _turn(stack, second, max_tokens=4, session_id="chat", determinism="best_effort")
        bodies = stack.fake.completion_bodies
        assert [b["id_slot"] for b in bodies] == [0, 0]
        assert [b["cache_prompt"] for b in bodies] == [True, True]
        session = await _session(stack, "chat")
        assert session["turns"] == 2 and session["tokens_out"] == 8
        assert session["cached_tokens"] == len(first.split()) + 1 + 4  # BOS, prompt, reply
        assert session["kv_warm"] is True and session["task_id"] is None
        assert 0 < session["ttl_left_ms"] <= 1_800_000
        assert session["budget_left"] == {"tokens": None, "cost": None, "wall_ms": None}

        # A strict turn re-evaluates its prompt (the same seed gives the same bytes).
        await _turn(stack, f"{second} more", max_tokens=2, session_id="chat", seed=7)
        assert bodies[-1]["cache_prompt"] is False and bodies[-1]["id_slot"] == 0

        # A second session gets the other slot; a task of no session is not pinned.
        await _turn(stack, "another conversation", max_tokens=2, session_id="other")
        await _turn(stack, "no session", max_tokens=2)
        assert bodies[-2]["id_slot"] == 1 and "id_slot" not in bodies[-1]


async def test_a_session_runs_one_turn_at_a_time() -> None:
    async with open_stack(slots=2, shutdown_grace_s=0.0) as stack:
        await stack.submit(prompt=HANG, max_tokens=8, session_id="s", task_id="t1")
        await stack.wait_state("t1", "running")
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "again", "max_tokens": 2, "session_id": "s"}
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "CONFLICT" and "t1" in refused.json()["message"]
        assert (await _session(stack, "s"))["task_id"] == "t1"
        # An idempotent resubmission of the same task is still the same task.
        same = await stack.client.post(
            "/v1/tasks",
            json={"prompt": HANG, "max_tokens": 8, "session_id": "s", "task_id": "t1"},
        )
        assert same.status_code == 202 and same.json()["task_id"] == "t1"


async def test_the_turn_cap_refuses_the_next_turn() -> None:
    async with open_stack(sessions={"max_turns": 2}) as stack:
        for _ in range(2):
            await _turn(stack, "hi", max_tokens=1, session_id="s")
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "hi", "max_tokens": 1, "session_id": "s"}
        )
        body = refused.json()
        assert refused.status_code == 429 and body["code"] == "BUDGET_EXCEEDED"
        assert body["policy_label"] == "turns" and body["retriable"] is False


async def test_a_token_budget_caps_the_turn_and_is_never_overspent() -> None:
    async with open_stack(sessions={"token_budget": 10}) as stack:
        _, events = await _turn(stack, "one", max_tokens=6, session_id="s")
        assert events[-1].event == "end"
        _, events = await _turn(stack, "two", max_tokens=6, session_id="s")
        tokens = [e for e in events if e.event == "token"]
        assert len(tokens) == 4  # what was left
        assert stack.fake.completion_bodies[-1]["n_predict"] == 4
        end = events[-1].data
        assert events[-1].event == "error" and end["code"] == "BUDGET_EXCEEDED"
        assert end["retriable"] is False
        session = await _session(stack, "s")
        assert session["tokens_out"] == 10 and session["budget_left"]["tokens"] == 0
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "three", "max_tokens": 1, "session_id": "s"}
        )
        assert refused.status_code == 429 and refused.json()["policy_label"] == "tokens"


async def test_a_cost_budget_is_a_token_budget_in_its_own_unit() -> None:
    sessions = {"cost_per_token": 0.25, "cost_budget": 1.0}
    async with open_stack(sessions=sessions) as stack:
        _, events = await _turn(stack, "one", max_tokens=6, session_id="s")
        assert len([e for e in events if e.event == "token"]) == 4
        assert events[-1].data["code"] == "BUDGET_EXCEEDED"
        session = await _session(stack, "s")
        assert session["cost"] == 1.0 and session["budget_left"]["cost"] == 0.0


async def test_a_wall_time_budget_cuts_the_running_turn() -> None:
    async with open_stack(sessions={"wall_budget_s": 0.3}) as stack:
        _, events = await _turn(stack, HANG, max_tokens=8, session_id="s")
        end = events[-1].data
        assert events[-1].event == "error" and end["code"] == "BUDGET_EXCEEDED"
        assert "wall-time budget" in end["message"]
        session = await _session(stack, "s")
        assert session["wall_ms"] == 300 and session["budget_left"]["wall_ms"] == 0
        await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)  # slot freed
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "x", "max_tokens": 1, "session_id": "s"}
        )
        assert refused.status_code == 429 and refused.json()["policy_label"] == "wall_time"


async def test_max_sessions_refuses_one_more() -> None:
    async with open_stack(sessions={"max_sessions": 1}) as stack:
        await _turn(stack, "x", max_tokens=1, session_id="a")
        refused = await stack.client.post(
            "/v1/tasks", json={"prompt": "x", "max_tokens": 1, "session_id": "b"}
        )
        body = refused.json()
        assert refused.status_code == 429 and body["code"] == "ADMISSION_REJECT"
        assert body["policy_label"] == "max_sessions"
        await stack.client.delete("/v1/sessions/a")
        await _turn(stack, "x", max_tokens=1, session_id="b")


async def test_delete_erases_the_slot_and_cancels_the_turn_in_progress() -> None:
    async with open_stack(slots=2) as stack:
        await _turn(
            stack, "a long shared prefix", max_tokens=2, session_id="s", determinism="best_effort"
        )
        assert stack.fake._slot_cache.get(0)
        deleted = await stack.client.delete("/v1/sessions/s")
        body = deleted.json()
        assert deleted.status_code == 200 and body["deleted"] is True
        assert body["kv_erased"] is True and body["turns"] == 1
        assert not stack.fake._slot_cache.get(0)
        assert (await stack.client.get("/v1/sessions/s")).status_code == 404
        assert (await stack.client.delete("/v1/sessions/s")).status_code == 404

        await stack.submit(prompt=HANG, max_tokens=8, session_id="t", task_id="live")
        await stack.wait_state("live", "running")
        deleted = await stack.client.delete("/v1/sessions/t")
        assert deleted.json()["kv_erased"] is False  # the turn never completed there
        status = (await stack.client.get("/v1/tasks/live")).json()
        assert status["state"] == "cancelled"
        events = await stack.stream("live")
        assert "deleted" in events[-1].data["message"]
        # The same id opens a fresh session.
        await _turn(stack, "again", max_tokens=1, session_id="t")
        assert (await _session(stack, "t"))["turns"] == 1


async def test_delete_in_attached_mode_without_slot_actions_still_forgets() -> None:
    async with open_stack() as stack:
        stack.fake.slot_actions = False
        await _turn(stack, "x y z", max_tokens=2, session_id="s", determinism="best_effort")
        body = (await stack.client.delete("/v1/sessions/s")).json()
        assert body["deleted"] is True and body["kv_erased"] is False


# -- the SessionBook alone, with explicit times ------------------------------------------------


def _task(name: str) -> Task:
    from orchestra.events import EventLog

    request = TaskRequest(prompt=name, max_tokens=4, session_id="s")
    return Task(
        id=name,
        request=request,
        fingerprint=name,
        log=EventLog(limit=8),
        submitted_at=0.0,
        queue_position=0,
        predicted_start_ms=0,
    )


def test_an_idle_session_expires_after_its_ttl_and_not_while_a_turn_runs() -> None:
    book = SessionBook(SessionsConfig(ttl_s=10))
    book.slots_known(2)
    task = _task("t1")
    session = book.open("s", task, now=0.0, homes={"": 2})
    assert book.expire(100.0) == []  # a turn in progress: never expires
    book.task_ended(session, task, 100.0, tokens_out=3, tokens_in=5, cached=0, slot=0)
    assert book.view(session, 105.0).ttl_left_ms == 5000
    assert book.expire(109.9) == [] and book.get("s") is session
    assert book.expire(110.0) == [session] and book.get("s") is None


def test_new_sessions_go_to_the_least_used_slot() -> None:
    book = SessionBook(SessionsConfig())
    book.slots_known(3)
    slots = [book.open(f"s{i}", _task(f"t{i}"), 0.0, {"": 3}).slot for i in range(5)]
    assert slots == [0, 1, 2, 0, 1]


@pytest.mark.parametrize(
    ("config", "tokens"),
    [
        (SessionsConfig(), None),
        (SessionsConfig(token_budget=10), 7),
        (SessionsConfig(cost_per_token=0.5, cost_budget=4.0), 5),
        (SessionsConfig(token_budget=6, cost_per_token=0.5, cost_budget=4.0), 3),
    ],
)
def test_tokens_left_is_the_tightest_budget(config: SessionsConfig, tokens: int | None) -> None:
    book = SessionBook(config)
    book.slots_known(1)
    task = _task("t")
    session = book.open("s", task, 0.0, {"": 1})
    book.task_ended(session, task, 1.0, tokens_out=3, tokens_in=None, cached=0, slot=0)
    assert book.left(session).tokens == tokens


def test_a_turn_moves_to_a_free_slot_rather_than_wait_for_another_session() -> None:
    book = SessionBook(SessionsConfig())
    book.slots_known(2)
    task = _task("t")
    session = book.open("s", task, 0.0, {"": 2})
    assert session.slot == 0
    params, cap = book.engine_params(session, {"prompt": "p", "n_predict": 4}, busy_slots={0})
    assert params["id_slot"] == 1 == session.slot and cap is None
    params, _ = book.engine_params(session, {"prompt": "p", "n_predict": 4}, busy_slots={0, 1})
    assert params["id_slot"] == 1  # nowhere free: it waits for its own slot at the engine
