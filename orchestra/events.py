"""Stream events and the per-task append-only event log.

A task's log is the single source for every subscriber of its SSE stream: each event is
encoded once, with ``id: <index>``, and every reader (first, late or resuming with
``Last-Event-ID``) gets the same bytes. Closing the log is how a task's stream ends; after
:meth:`EventLog.close` nothing can be appended, which is what makes "no token after cancel"
hold by construction: the Queue closes the log and cancels the session in one synchronous
step, and a token that arrives later finds the log closed and is dropped.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio


class EventKind(enum.StrEnum):
    """The SSE ``event:`` names of the wire contract."""

    STARTED = "started"
    TOKEN = "token"
    TOOL_CALL = "tool_call"
    """A piece of a tool call of a chat answer (``index``, ``id`` and ``name`` on its first
    piece, ``arguments``: a piece of its JSON arguments)."""
    METRICS = "metrics"
    END = "end"
    ERROR = "error"


TERMINAL_KINDS = frozenset({EventKind.END, EventKind.ERROR})


@attrs.frozen
class StreamEvent:
    """One event of a task's stream."""

    id: int
    """Index in the log, from 0; the SSE ``id:`` field."""
    kind: EventKind
    """The SSE ``event:`` name."""
    data: Mapping[str, Any]
    """The JSON object sent as ``data:``."""
    _wire: list[bytes] = attrs.field(factory=list, eq=False, repr=False)

    @property
    def wire(self) -> bytes:
        """The encoded SSE frame: computed when first read (a task only the OpenAI face
        reads never needs it), then shared by every subscriber."""
        if not self._wire:
            self._wire.append(encode_event(self.id, self.kind, self.data))
        return self._wire[0]


def encode_event(event_id: int, kind: EventKind, data: Mapping[str, Any]) -> bytes:
    """Encode one SSE frame: ``id``, ``event`` and a single-line JSON ``data``."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n".encode()


@attrs.define
class EventLog:
    """The append-only, bounded, closable event log of one task.

    ``limit`` bounds the non-terminal events (``max_tokens`` + a few); one terminal event
    (``end`` or ``error``) always fits, and appending it closes the log. Appends are
    synchronous and never block: a slow subscriber only falls behind, it never holds the
    engine. Subscribers are counted so the Queue can notice a stream nobody reads any more.
    """

    limit: int
    _events: list[StreamEvent] = attrs.field(factory=list, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _readers: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)
    """Where readers wait for the next event (woken all at once, per event)."""
    _subscribers: int = attrs.field(default=0, init=False)
    _ever_subscribed: bool = attrs.field(default=False, init=False)
    _subscribers_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    tokens: int = attrs.field(default=0, init=False)
    """How many ``token`` events the log holds."""

    def __len__(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        """True once a terminal event was appended or :meth:`close` was called."""
        return self._closed

    @property
    def events(self) -> Sequence[StreamEvent]:
        """Every event so far, oldest first (a read-only view)."""
        return tuple(self._events)

    def events_from(self, index: int) -> Sequence[StreamEvent]:
        """The events with ``id >= index``."""
        return self._events[index:]

    def append(self, kind: EventKind, data: Mapping[str, Any]) -> bool:
        """Append a non-terminal event; return False (and drop it) if the log is closed or full."""
        if self._closed or len(self._events) >= self.limit:
            return False
        self._push(kind, data)
        if kind is EventKind.TOKEN:
            self.tokens += 1
        return True

    def finish(self, kind: EventKind, data: Mapping[str, Any]) -> bool:
        """Append the terminal ``end`` or ``error`` event and close the log, in one step.

        Returns False, changing nothing, if the log was already closed.
        """
        if kind not in TERMINAL_KINDS:
            raise ValueError(f"{kind} is not a terminal event")
        if self._closed:
            return False
        self._push(kind, data)
        self._closed = True
        return True

    def close(self) -> None:
        """Close the log without a terminal event (only for logs being thrown away)."""
        self._closed = True
        self._notify()

    def _push(self, kind: EventKind, data: Mapping[str, Any]) -> None:
        event_id = len(self._events)
        self._events.append(StreamEvent(event_id, kind, data))
        self._notify()

    def _notify(self) -> None:
        self._readers.unpark_all()

    async def wait_beyond(self, index: int) -> None:
        """Return once the log holds an event with ``id >= index`` or is closed.

        Always a checkpoint: one wait when there is nothing yet (the wake-up is the only
        schedule point of a reader per event), one checkpoint when there is. Cancellation
        leaves the log unchanged.
        """
        if len(self._events) > index or self._closed:
            await trio.lowlevel.checkpoint()
            return
        while len(self._events) <= index and not self._closed:
            await self._readers.park()

    # -- subscribers -------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """How many SSE readers are attached right now."""
        return self._subscribers

    def add_subscriber(self) -> None:
        """Count one more reader."""
        self._subscribers += 1
        self._ever_subscribed = True
        self._subscribers_changed.set()
        self._subscribers_changed = trio.Event()

    def remove_subscriber(self) -> None:
        """Count one reader less."""
        self._subscribers -= 1
        self._subscribers_changed.set()
        self._subscribers_changed = trio.Event()

    async def wait_abandoned(self) -> None:
        """Return once the log has had a reader and has none now."""
        while not (self._ever_subscribed and self._subscribers == 0):
            await self._subscribers_changed.wait()

    async def wait_subscribed(self) -> None:
        """Return once at least one reader is attached."""
        while self._subscribers == 0:
            await self._subscribers_changed.wait()

    def subscribe(self, start: int = 0, *, counted: bool = True) -> Subscription:
        """A reader of this log from event ``start`` on (see :class:`Subscription`); one
        not ``counted`` only watches (the status page): its leaving orphans nothing."""
        return Subscription(self, start, counted)


@attrs.define
class Subscription:
    """One reader of a task's events, from a given event on.

    While it is open (``with subscription:``) it counts as a subscriber of the log, so the
    Queue notices a stream that nobody reads any more, unless it is not ``counted`` (a
    watcher: a task no client reads is not kept alive by it, nor cancelled when it leaves);
    reading changes nothing else.
    """

    _log: EventLog
    _next: int
    _counted: bool = True

    def __enter__(self) -> Subscription:
        if self._counted:
            self._log.add_subscriber()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._counted:
            self._log.remove_subscriber()

    def take(self) -> bytes:
        """The wire bytes of every event not read yet (empty when there is none)."""
        return b"".join(event.wire for event in self.take_events())

    def take_events(self) -> Sequence[StreamEvent]:
        """Every event not read yet, oldest first (empty when there is none)."""
        events = self._log.events_from(self._next)
        self._next += len(events)
        return events

    @property
    def finished(self) -> bool:
        """The log is closed and every event of it was read."""
        return self._log.closed and self._next >= len(self._log)

    async def wait(self) -> None:
        """Return once there is an event to read or the log is closed."""
        await self._log.wait_beyond(self._next)
