"""StreamSession: a bug in the engine call ends its task, never the Queue's nursery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from orchestra.actors.stream_session import StreamSession
from orchestra.errors import ErrorCode
from orchestra.events import EventKind, EventLog
from orchestra.messages import Failed
from orchestra.task import Endpoint


class Broken:
    """An engine whose calls fail with what no engine error is (as httpx failing to encode
    a string with a lone surrogate once did, which took the whole service down)."""

    async def complete(self, params: Mapping[str, Any], on_token: Any) -> Any:
        on_token("one")
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    async def chat(self, params: Mapping[str, Any], on_piece: Any) -> Any:
        raise RuntimeError("a bug")


async def test_an_unexpected_exception_is_the_tasks_internal_failure() -> None:
    for endpoint, sent in ((Endpoint.COMPLETION, 1), (Endpoint.CHAT, 0)):
        log = EventLog(limit=8)
        session = StreamSession(Broken(), {}, log, trio.CancelScope(), endpoint=endpoint)  # type: ignore[arg-type]
        outcome = await session.run()
        assert isinstance(outcome, Failed)
        assert outcome.error.code is ErrorCode.INTERNAL and not outcome.error.retriable
        assert outcome.tokens_sent == sent
        assert [e.kind for e in log.events] == [EventKind.TOKEN] * sent
