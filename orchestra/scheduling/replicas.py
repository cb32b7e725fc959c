"""The replicas of one pool as its Queue sees them: each one's state, slots and the room
its dispatches hold, the rule that picks where the next task goes, and the pool's one
state made from theirs (DESIGN §5).

Dispatch goes to the ready replica with the most free room (its slots plus the engine
backlog, less what its dispatches hold); replicas with as much room take turns. A
session's turn goes to its own replica while that one is ready (the Queue asks
:meth:`ReplicaBook.has_room` first). The pool is ready while any replica is, unavailable
when every one is, and starting otherwise.

Only the Queue's run loop uses it; pure, no trio.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from orchestra.pool import PoolState, ReplicaState


@attrs.define
class ReplicaEntry:
    """One replica's last reported state and the room its dispatches hold."""

    id: str
    state: ReplicaState = ReplicaState.STARTING
    detail: str = "not probed yet"
    slots: int = 0
    """The engine's slots as its supervisor last said (0 while it does not know)."""
    busy: int = 0
    """Dispatches holding room there: running tasks, and sessions still closing."""

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY


@attrs.define
class ReplicaBook:
    """Every replica of a pool, in the order they were configured."""

    ids: tuple[str, ...]
    backlog: int = 0
    """Dispatches beyond a replica's slots, waiting in its engine's own queue."""
    _entries: list[ReplicaEntry] = attrs.field(init=False)
    _index: dict[str, int] = attrs.field(init=False)
    _turn: int = attrs.field(default=0, init=False)
    """Where the search for the next dispatch starts among equals."""

    def __attrs_post_init__(self) -> None:
        if not self.ids:
            raise ValueError("a pool has at least one replica")
        self._entries = [ReplicaEntry(replica_id) for replica_id in self.ids]
        self._index = {replica_id: i for i, replica_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ReplicaEntry]:
        return iter(self._entries)

    def __getitem__(self, index: int) -> ReplicaEntry:
        return self._entries[index]

    def index(self, replica_id: str) -> int | None:
        return self._index.get(replica_id)

    # -- what the supervisors and the sessions say -----------------------------------------

    def report(
        self, index: int, state: ReplicaState, detail: str, slots: int | None = None
    ) -> bool:
        """Replica ``index`` is now in ``state``; True when it stopped being ready (its
        KV cache may be gone)."""
        entry = self._entries[index]
        left = entry.ready and state is not ReplicaState.READY
        entry.state, entry.detail = state, detail
        if slots is not None:
            entry.slots = slots
        return left

    def hold(self, index: int) -> None:
        """A dispatch to replica ``index`` begins: it holds room there; the next search
        among equals starts after it."""
        self._entries[index].busy += 1
        self._turn = (index + 1) % len(self._entries)

    def release(self, index: int) -> None:
        """A session on replica ``index`` returned: its room is free."""
        self._entries[index].busy -= 1

    # -- reads -------------------------------------------------------------------------------

    def room(self, index: int) -> int:
        """Dispatches replica ``index`` may hold now: 0 unless it is ready."""
        entry = self._entries[index]
        if not entry.ready or not entry.slots:
            return 0
        return entry.slots + self.backlog

    def free(self, index: int) -> int:
        return max(0, self.room(index) - self._entries[index].busy)

    def has_room(self, index: int) -> bool:
        return self.free(index) > 0

    def choose(self) -> int | None:
        """The ready replica with the most free room (equals in turn), or None when no
        replica has any."""
        best, best_free = None, 0
        count = len(self._entries)
        for step in range(count):
            index = (self._turn + step) % count
            free = self.free(index)
            if free > best_free:
                best, best_free = index, free
        return best

    def ready_slots_by_id(self) -> dict[str, int]:
        """Each ready replica's slots, by id."""
        return {e.id: e.slots for e in self._entries if e.ready and e.slots}

    @property
    def ready_slots(self) -> int:
        """The slots of every ready replica: what predictions and ``Retry-After`` count."""
        return sum(entry.slots for entry in self._entries if entry.ready)

    def homes(self) -> dict[str, int]:
        """Where a new session may live: each ready replica and its slots (every replica
        with known slots when none is ready)."""
        ready = {e.id: e.slots for e in self._entries if e.ready and e.slots}
        return ready or {e.id: e.slots for e in self._entries if e.slots}

    def pool_state(self) -> tuple[PoolState, str]:
        """The pool's state and detail, from its replicas'."""
        entries = self._entries
        if len(entries) == 1:
            only = entries[0]
            if only.ready:
                return PoolState.READY, only.detail
            if only.state is ReplicaState.UNAVAILABLE:
                return PoolState.UNAVAILABLE, only.detail
            return PoolState.STARTING, only.detail
        ready = [e for e in entries if e.ready]
        others = "; ".join(f"{e.id} {e.state}: {e.detail}" for e in entries if not e.ready)
        if ready:
            if len(ready) == len(entries):
                return PoolState.READY, "ready"
            return PoolState.READY, f"ready on {len(ready)} of {len(entries)} replicas ({others})"
        if all(e.state is ReplicaState.UNAVAILABLE for e in entries):
            return PoolState.UNAVAILABLE, others
        return PoolState.STARTING, others
