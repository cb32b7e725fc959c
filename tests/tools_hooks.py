"""Policy hooks the tools' tests name in ``tools.policy.hook`` (``tests.tools_hooks:...``).

Each records the calls it saw in :data:`SEEN`; the tests clear it.
"""

from __future__ import annotations

import attrs
import trio

from orchestra.tools import Refuse, ToolCall

SEEN: list[ToolCall] = []
NOT_CALLABLE = 42
HOOK_SECRET = "hook-added-secret-5d1c9e0b7a"
"""The credential :func:`add_credentials` adds: it must be redacted like the agent's own."""


def allow(call: ToolCall) -> None:
    SEEN.append(call)


async def allow_async(call: ToolCall) -> None:
    await trio.lowlevel.checkpoint()
    SEEN.append(call)


def refuse_blocked(call: ToolCall) -> Refuse | None:
    """Refuses a path with ``blocked`` in it (on any hop)."""
    SEEN.append(call)
    return Refuse("no blocked pages for agents") if "blocked" in call.url else None


async def refuse_async(call: ToolCall) -> Refuse:
    await trio.lowlevel.checkpoint()
    SEEN.append(call)
    return Refuse(f"{call.who} may not use {call.tool} in session {call.session_id}")


def rewrite_path(call: ToolCall) -> ToolCall | None:
    """``/old`` becomes ``/new``: the policy checks the new URL, the server sees it."""
    SEEN.append(call)
    if call.url.endswith("/old"):
        return attrs.evolve(call, url=call.url.removesuffix("/old") + "/new")
    return None


def rewrite_to_private(call: ToolCall) -> ToolCall:
    """Sends every call to 127.0.0.2, which the tests' policy refuses."""
    SEEN.append(call)
    port = call.url.rsplit(":", 1)[1].split("/", 1)[0]
    return attrs.evolve(call, url=f"http://127.0.0.2:{port}/")


def rewrite_to_post(call: ToolCall) -> ToolCall:
    SEEN.append(call)
    return attrs.evolve(call, method="POST")


async def add_credentials(call: ToolCall) -> ToolCall:
    """Adds the credentials the agent must never see (the hook's real job, often)."""
    await trio.lowlevel.checkpoint()
    SEEN.append(call)
    return attrs.evolve(call, headers={**call.headers, "Authorization": f"Bearer {HOOK_SECRET}"})


def rewrite_query(call: ToolCall) -> ToolCall:
    SEEN.append(call)
    assert call.query is not None
    return attrs.evolve(call, query=call.query + " site:wiki.lan")


def raises(call: ToolCall) -> None:
    SEEN.append(call)
    raise RuntimeError("the hook's own bug")


def returns_junk(call: ToolCall) -> str:
    SEEN.append(call)
    return "yes"
