"""A one-shot reply slot: how an actor answers a request message."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


@attrs.define(eq=False)
class Reply(Generic[T]):
    """Carried inside a request message; the receiving actor calls :meth:`send` once.

    :meth:`send` is synchronous and never blocks, so an actor answering never waits on the
    asker. :meth:`receive` returns the value, or raises Cancelled leaving the slot unread.
    """

    _event: trio.Event = attrs.field(factory=trio.Event, init=False)
    _value: T | None = attrs.field(default=None, init=False)

    def send(self, value: T) -> None:
        """Deliver the answer. A second call raises RuntimeError."""
        if self._event.is_set():
            raise RuntimeError("reply already sent")
        self._value = value
        self._event.set()

    async def receive(self) -> T:
        """Wait for the answer."""
        await self._event.wait()
        return self._value  # type: ignore[return-value]
