"""Sessions against the real llama-server with two slots: a second turn reuses the slot's
KV cache (the engine's ``timings.cache_n``) and reaches its first token sooner than the
same prompt evaluated cold; DELETE erases the slot, so the next turn starts cold."""

from __future__ import annotations

from typing import Any

import trio

from .engine import Owned, open_owned
from .harness import tokens_seen

SYSTEM = (
    "You are a careful assistant for a home lab. You answer in short sentences, you name "
    "the tools you would use, and you never invent numbers. The lab has one server with "
    "two disks, a router, a switch, a small UPS and a backup drive that is plugged in once "
    "a week. The owner runs a media server, a password manager, a wiki and a few agents "
    "that call a language model through an orchestrator. "
) * 4


async def _first_token_s(owned: Owned, **body: Any) -> tuple[float, str]:
    """Seconds from submitting to the first token event, and the task's id."""
    started = trio.current_time()
    task_id = await owned.submit(**body)
    async with owned.live(task_id) as live:
        await live.until(tokens_seen(1))
        first = trio.current_time() - started
        events = await live.to_end()
    assert events[-1].event == "end", events[-1]
    return first, task_id


async def _session(owned: Owned, session_id: str) -> dict[str, Any]:
    response = await owned.client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_second_turn_reuses_the_cache_and_delete_evicts_it() -> None:
    turn = {"max_tokens": 8, "temperature": 0, "determinism": "best_effort"}
    async with open_owned(replica={"parallel": 2, "ctx_size": 4096}) as owned:
        first_prompt = f"{SYSTEM}\nUser: Which disk should hold the backups?\nAssistant:"
        await _first_token_s(owned, prompt=first_prompt, session_id="chat", **turn)
        after_first = await _session(owned, "chat")
        assert after_first["cached_tokens"] == 0 and after_first["kv_warm"] is True

        second_prompt = f"{first_prompt} The second one.\nUser: And how often?\nAssistant:"
        warm_s, _ = await _first_token_s(owned, prompt=second_prompt, session_id="chat", **turn)
        after_second = await _session(owned, "chat")
        reused = after_second["cached_tokens"]
        assert reused > 200, after_second  # the whole first turn was found in the slot
        # The same prompt, cold: a strict task re-evaluates all of it. In a session of its
        # own it goes to the other slot (a task of no session may land on any idle slot,
        # the one holding the conversation included, since the prompts are alike).
        cold_s, _ = await _first_token_s(
            owned, prompt=second_prompt, session_id="cold", **{**turn, "determinism": "strict"}
        )
        assert (await _session(owned, "cold"))["slot"] != after_second["slot"]
        # Hundreds of prompt tokens against a handful: an order of magnitude apart on CPU.
        assert warm_s < cold_s, (warm_s, cold_s)

        slot = after_second["slot"]
        assert (await _session(owned, "chat"))["kv_warm"] is True

        deleted = (await owned.client.delete("/v1/sessions/chat")).json()
        assert deleted["deleted"] is True and deleted["kv_erased"] is True
        assert (await owned.client.get("/v1/sessions/chat")).status_code == 404

        # A new session lands on the same (least used) slot and finds nothing to reuse.
        await _first_token_s(owned, prompt=second_prompt, session_id="again", **turn)
        again = await _session(owned, "again")
        assert again["slot"] == slot and again["cached_tokens"] == 0, again
