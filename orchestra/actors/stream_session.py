"""StreamSession: one running task against the engine, in its own cancel scope."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from orchestra.engine.protocol import Engine, ToolCallDelta
from orchestra.errors import EngineError, ErrorCode
from orchestra.events import EventKind, EventLog
from orchestra.messages import Completed, Failed, Interrupted, Outcome
from orchestra.scheduling.progress import Progress
from orchestra.task import Endpoint

log = logging.getLogger("orchestra.queue")


@attrs.define
class StreamSession:
    """Runs one task's generation and appends its tokens to the task's event log.

    Owns: the engine stream of one task. Receives: the engine parameters, the task's log
    and a cancel scope made by the Queue. Promises under cancellation: when ``scope`` is
    cancelled, :meth:`run` closes the engine stream (freeing the llama.cpp slot) and returns
    :class:`Interrupted`; a piece that arrives after the Queue cancelled the scope is
    dropped, so no token is ever emitted after a cancel, and a dispatch that was put back
    (requeued, preempted) adds nothing to the log its next dispatch writes. It never
    writes task state: it reports its :data:`Outcome` to the Queue, which does; an
    unexpected exception (a bug) is reported as the task's ``INTERNAL`` failure, so it ends
    the task and never the Queue's nursery.
    """

    engine: Engine
    params: Mapping[str, Any]
    log: EventLog
    scope: trio.CancelScope
    progress: Progress | None = None
    """Set when the task asked for ``metrics`` events: they go in between its tokens."""
    endpoint: Endpoint = Endpoint.COMPLETION
    tokens_sent: int = attrs.field(default=0, init=False)
    first_token_at: float | None = attrs.field(default=None, init=False)

    async def run(self) -> Outcome:
        """Generate until the engine ends, fails, or the scope is cancelled."""
        with self.scope:
            try:
                if self.endpoint is Endpoint.EMBEDDING:
                    embedded = await self.engine.embed(self.params["input"])
                    return Completed(
                        0, 0.0, tokens_in=embedded.prompt_tokens, vectors=embedded.vectors
                    )
                if self.endpoint is Endpoint.CHAT:
                    done = await self.engine.chat(self.params, self._on_piece)
                else:
                    done = await self.engine.complete(self.params, self._on_piece)
            except EngineError as exc:
                return Failed(exc, self.tokens_sent)
            except Exception as exc:  # a bug here must end this task, not the service
                log.exception("task's engine call failed unexpectedly")
                error = EngineError(ErrorCode.INTERNAL, f"internal error: {exc!r}", retriable=False)
                return Failed(error, self.tokens_sent)
            return Completed(
                done.tokens_out,
                done.decode_time_ms,
                self.first_token_at,
                done.tokens_in,
                done.cache_n,
                done.slot,
                done.stop_type,
                done.prompt_time_ms,
            )
        return Interrupted()

    def _on_piece(self, piece: str | ToolCallDelta) -> None:
        if self.scope.cancel_called:
            # The Queue stopped this dispatch (a cancel closed the log already; a requeue or
            # a preemption left it open for the next dispatch): nothing more of it is kept.
            return
        if isinstance(piece, str):
            kind, data = EventKind.TOKEN, {"t": piece, "i": self.tokens_sent}
        else:
            kind, data = EventKind.TOOL_CALL, _tool_call(piece, self.tokens_sent)
        if self.log.append(kind, data):
            now = trio.current_time()
            if self.tokens_sent == 0:
                self.first_token_at = now
            self.tokens_sent += 1
            if self.progress is not None and (frame := self.progress.on_token(now)):
                self.log.append(EventKind.METRICS, frame)


def _tool_call(piece: ToolCallDelta, index: int) -> dict[str, object]:
    data: dict[str, object] = {"index": piece.index}
    if piece.id is not None:
        data["id"] = piece.id
    if piece.name is not None:
        data["name"] = piece.name
    return data | {"arguments": piece.arguments, "i": index}
