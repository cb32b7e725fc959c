"""The fake engine's slots: which are generating, and the FIFO of requests waiting for one.

:class:`SlotTable` holds only methods; :class:`~.server.FakeLlamaServer` inherits them and
declares the state they use as its fields (the counters are for tests to observe there).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio


@attrs.define
class Waiter:
    """A request waiting for a slot; ``slot`` is filled in when one is handed to it."""

    ready: trio.Event = attrs.field(factory=trio.Event)
    slot: int | None = None
    wants: int | None = None
    """The slot it asked for (``id_slot``), or None for any."""
    completion: bool = True
    """It counts in ``completions_started`` (an embedding request does not)."""


class SlotTable:
    """Taking, handing over and freeing slots."""

    if not TYPE_CHECKING:  # mypy would read it as this class's only attributes
        __slots__ = ()  # no instance dict: the slotted server holds all the state

    total_slots: int
    """Parallel generation slots (``-np``)."""
    completions_started: int
    """Completions that got a slot and began generating."""
    deferred: int
    """Requests waiting for a free slot right now."""
    _slot_tasks: dict[int, int]
    """The busy slots, each with the id of the task it runs."""
    _next_task: int
    _waiters: deque[Waiter]
    _notify: Callable[[], None]
    """Wakes whoever waits for a change of the server's state."""

    def _free_slot(self, total: int) -> int | None:
        return next((i for i in range(total) if i not in self._slot_tasks), None)

    def _occupy(self, slot: int, completion: bool = True) -> None:
        self._slot_tasks[slot] = self._next_task
        self._next_task += 1
        if completion:
            self.completions_started += 1

    def _dispatch(self, total: int) -> None:
        """Hand free slots to waiting requests: a free slot goes to the oldest request that
        asked for it, else to the oldest that asked for any slot."""
        handed = False
        for slot in range(total):
            if slot in self._slot_tasks:
                continue
            waiter = next((w for w in self._waiters if w.wants == slot), None)
            waiter = waiter or next((w for w in self._waiters if w.wants is None), None)
            if waiter is None:
                continue
            self._waiters.remove(waiter)
            self._occupy(slot, waiter.completion)
            self.deferred -= 1
            waiter.slot = slot
            waiter.ready.set()
            handed = True
        if handed:
            self._notify()

    def _release(self, slot: int) -> None:
        """Free ``slot`` and hand it to the oldest waiter; the caller notifies."""
        del self._slot_tasks[slot]
        self._dispatch(self.total_slots)

    async def _take_slot(self, wants: int | None = None, *, completion: bool = True) -> int:
        """Occupy a slot (slot ``wants`` if given, modulo the slot count), waiting FIFO
        behind earlier requests while none is free; ``completion``: the slot is taken by a
        generation (counted in ``completions_started``)."""
        if wants is not None:
            wants %= max(self.total_slots, 1)
            if wants not in self._slot_tasks and all(w.wants != wants for w in self._waiters):
                self._occupy(wants, completion)
                self._notify()
                return wants
        elif not self._waiters and (slot := self._free_slot(self.total_slots)) is not None:
            self._occupy(slot, completion)
            self._notify()
            return slot
        waiter = Waiter(wants=wants, completion=completion)
        self._waiters.append(waiter)
        self.deferred += 1
        self._notify()
        try:
            await waiter.ready.wait()
        except BaseException:
            if waiter.slot is not None:  # handed over just as we were cancelled
                self._release(waiter.slot)
            else:
                self._waiters.remove(waiter)
                self.deferred -= 1
            self._notify()
            raise
        assert waiter.slot is not None
        return waiter.slot
