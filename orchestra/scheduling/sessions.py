"""Sessions: conversations pinned to one engine slot, with a turn cap, a TTL and budgets.

A task with a ``session_id`` opens the session (or continues it). A session lives on one
replica of its pool and one slot of that replica's engine, chosen when it opens (the
least used); every turn is sent there with the session's ``id_slot``, so llama-server
finds the conversation's prefix in that slot's KV cache (``cache_prompt``, for
``best_effort`` tasks; a ``strict`` task re-evaluates its prompt so that the same seed
gives the same bytes). A turn whose replica is not ready moves to one that is, its cache
cold.

A session has at most one task in progress: turns of a conversation follow each other, and
this makes every budget exact. A turn is sent with ``n_predict`` capped at the tokens the
session has left, and with a cut at the wall time it has left, so a budget is never
overspent. The cost of a session is its generated tokens times ``cost_per_token``.

Only the Queue actor touches a :class:`SessionBook`; every method is synchronous and
never blocks.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from typing import Any

import attrs

from orchestra.config import SessionsConfig
from orchestra.errors import ErrorCode, Refusal
from orchestra.scheduling.record import Task


@attrs.frozen
class BudgetLeft:
    """What a session may still spend; None where there is no limit."""

    tokens: int | None
    wall_s: float | None
    cost: float | None


@attrs.define(kw_only=True)
class Session:
    """One conversation: its slot, what it has used, and its task in progress."""

    id: str
    slot: int
    """The engine slot its turns are pinned to (``id_slot``), on its replica."""
    replica: str = ""
    """The replica whose engine holds that slot ("" for a pool of one replica that has not
    said its id, as in the unit tests)."""
    created_at: float
    last_active_at: float
    """When it was opened or its last task ended (the TTL counts from here)."""
    turns: int = 0
    """Tasks admitted in it."""
    tokens_in: int = 0
    """Prompt tokens the engine evaluated for it (reused ones not counted)."""
    tokens_out: int = 0
    """Tokens generated for it: what its token and cost budgets count."""
    cached_tokens: int = 0
    """Prompt tokens reused from the slot's cache, over all turns."""
    wall_s: float = 0.0
    """Seconds its tasks ran, from dispatch to end: what its wall-time budget counts."""
    live: Task | None = None
    """Its task in progress (queued or running), if any."""
    warm: bool = False
    """Its last turn completed on its slot (nothing else has used the slot since when
    :meth:`SessionBook.kv_warm` says so)."""


@attrs.frozen
class SessionView:
    """A snapshot of one session for ``GET /v1/sessions/{id}``."""

    session_id: str
    slot: int
    replica: str
    turns: int
    max_turns: int
    tokens_in: int
    tokens_out: int
    cached_tokens: int
    wall_ms: int
    cost: float
    budget_left: BudgetLeft
    ttl_left_ms: int | None
    """None while a task is in progress (a session does not expire then)."""
    kv_warm: bool
    task_id: str | None
    """Its task in progress."""


@attrs.frozen
class Turn:
    """How a session's turn is dispatched: its engine parameters (its slot, ``n_predict``
    capped by the token budget), the slot, the cap (None when the budget did not lower
    ``n_predict``) and the wall time its budget has left (None: no wall-time budget)."""

    params: dict[str, Any]
    slot: int
    token_cap: int | None
    wall_left_s: float | None


def _least_used_slot(sessions: Collection[Session], homes: Mapping[str, int]) -> tuple[str, int]:
    """The (replica, slot) of ``homes`` (replica: its slots) the fewest sessions are pinned
    to, the first such; slot 0 of replica "" when no replica has said its slots."""
    load = {(replica, slot): 0 for replica, slots in homes.items() for slot in range(slots)}
    if not load:
        return next(iter(homes), ""), 0
    for session in sessions:
        key = (session.replica, session.slot)
        if key in load:
            load[key] += 1
    return min(load, key=load.__getitem__)


@attrs.define
class SessionBook:
    """Every live session, the slot each is pinned to, and what each has spent.

    Owns: :class:`Session` records. Receives: calls from the Queue, in its run loop.
    Promises: a session has at most one task in progress; no turn is admitted past the
    turn cap or a spent budget, and no turn can spend more than is left.
    """

    config: SessionsConfig
    _sessions: dict[str, Session] = attrs.field(factory=dict, init=False)
    _expiry: list[tuple[float, str]] = attrs.field(factory=list, init=False)
    """A heap of (when, session id), checked lazily: an entry is stale once the session
    has become active again, or is gone."""
    _slot_last: dict[tuple[str, int], str | None] = attrs.field(factory=dict, init=False)
    """Per (replica, slot), the session whose turn last completed there (None: a task of
    no session)."""
    _slots: dict[str, int] = attrs.field(factory=dict, init=False)
    """Per replica, the slots its engine has."""

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        """The live session with this id."""
        return self._sessions.get(session_id)

    # -- admission -------------------------------------------------------------------------

    def refusal(self, session_id: str) -> Refusal | None:
        """Why a new turn of ``session_id`` may not be admitted, if it may not."""
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self.config.max_sessions:
                return Refusal(
                    ErrorCode.ADMISSION_REJECT,
                    f"{len(self._sessions)} sessions are open, the most allowed "
                    f"(sessions.max_sessions); end one with DELETE /v1/sessions/{{id}}",
                    retriable=True,
                    retry_after_ms=round(self.config.ttl_s * 1000),
                    policy_label="max_sessions",
                )
            return None
        if session.live is not None:
            return Refusal(
                ErrorCode.CONFLICT,
                f"session {session_id!r} already has a task in progress "
                f"({session.live.id}); a session runs one turn at a time",
            )
        if session.turns >= self.config.max_turns:
            return self._spent(session_id, "turns", f"{session.turns} turns, the most allowed")
        left = self.left(session)
        if left.tokens is not None and left.tokens <= 0:
            return self._spent(session_id, "tokens", f"{session.tokens_out} tokens generated")
        if left.wall_s is not None and left.wall_s <= 0:
            return self._spent(session_id, "wall_time", f"{session.wall_s:.1f} s of run time")
        return None

    @staticmethod
    def _spent(session_id: str, label: str, what: str) -> Refusal:
        return Refusal(
            ErrorCode.BUDGET_EXCEEDED,
            f"session {session_id!r} has spent its budget: {what}",
            retriable=False,
            policy_label=label,
        )

    def open(self, session_id: str, task: Task, now: float, homes: Mapping[str, int]) -> Session:
        """Admit ``task`` as the next turn of ``session_id``, opening the session if new on
        the least used slot of ``homes`` (each replica it may live on, with its slots).
        Call only after :meth:`refusal` returned None."""
        session = self._sessions.get(session_id)
        if session is None:
            replica, slot = _least_used_slot(self._sessions.values(), homes)
            session = Session(
                id=session_id, slot=slot, replica=replica, created_at=now, last_active_at=now
            )
            self._sessions[session_id] = session
        session.turns += 1
        session.live = task
        return session

    # -- budgets -----------------------------------------------------------------------------

    def left(self, session: Session) -> BudgetLeft:
        """What ``session`` may still spend."""
        config = self.config
        tokens = config.token_budget - session.tokens_out if config.token_budget else None
        cost = None
        if config.cost_budget:
            cost = config.cost_budget - session.tokens_out * config.cost_per_token
            affordable = math.floor(cost / config.cost_per_token + 1e-9)
            tokens = affordable if tokens is None else min(tokens, affordable)
        wall = config.wall_budget_s - session.wall_s if config.wall_budget_s else None
        return BudgetLeft(tokens=tokens, wall_s=wall, cost=cost)

    def engine_params(
        self, session: Session, params: Mapping[str, Any], busy_slots: Collection[int]
    ) -> tuple[dict[str, Any], int | None]:
        """The engine parameters of a turn about to be dispatched, and the token cap the
        session's budget put on it (None when it did not lower ``n_predict``).

        The turn goes to the session's slot. When another session's turn holds that slot
        (more sessions than slots), the session moves to a slot of its replica no turn
        holds (``busy_slots`` are that replica's), if there is one, rather than wait: its
        cache there is cold for this turn.
        """
        total = max(self._slots.get(session.replica, 1), 1)
        if session.slot in busy_slots:
            free = [slot for slot in range(total) if slot not in busy_slots]
            if free:
                session.slot, session.warm = free[0], False
        out = {**params, "id_slot": session.slot}
        cap = None
        tokens_left = self.left(session).tokens
        if tokens_left is not None and tokens_left < out["n_predict"]:
            cap = out["n_predict"] = max(tokens_left, 0)
        return out, cap

    def home(self, task: Task) -> str | None:
        """The replica ``task`` belongs on: its session's, when it is its session's turn in
        progress (None for a task without a session)."""
        session = self._live_session(task)
        return None if session is None else session.replica

    def _live_session(self, task: Task) -> Session | None:
        session_id = task.request.session_id
        session = None if session_id is None else self._sessions.get(session_id)
        if session is None or session.live is not task:
            return None
        return session

    def turn(
        self, task: Task, params: Mapping[str, Any], busy_slots: Collection[int], replica: str = ""
    ) -> Turn | None:
        """How ``task`` is dispatched to ``replica`` when it is its session's turn in
        progress (None when it is not: a task without a session, or one its session no
        longer waits on). A session sent to another replica than its own (its own is not
        ready) moves there, to the least used slot, with its cache cold."""
        session = self._live_session(task)
        if session is None:
            return None
        if session.replica != replica:
            homes = {replica: self._slots.get(replica, 0)}
            others = [s for s in self._sessions.values() if s is not session]
            session.replica, session.slot = _least_used_slot(others, homes)
            session.warm = False
        out, cap = self.engine_params(session, params, busy_slots)
        return Turn(out, session.slot, cap, self.left(session).wall_s)

    # -- what happened ---------------------------------------------------------------------

    def turn_ended(self, task: Task, now: float, tokens_out: int) -> None:
        """``task`` ended; if it was its session's turn in progress, account for it."""
        session = self._live_session(task)
        if session is not None:
            ran_on = task.ran_on if task.replica == session.replica else None
            self.task_ended(
                session, task, now, tokens_out=tokens_out, tokens_in=task.tokens_in,
                cached=task.cached_tokens, slot=ran_on,
            )  # fmt: skip

    def slots_known(self, slots_total: int, replica: str = "") -> None:
        """``replica``'s engine has ``slots_total`` slots (re-pins its sessions beyond
        them)."""
        if self._slots.get(replica) != slots_total:
            self._slots[replica] = slots_total
            for key in [key for key in self._slot_last if key[0] == replica]:
                del self._slot_last[key]
            self._slot_last.update(dict.fromkeys((replica, s) for s in range(slots_total)))
            for session in self._sessions.values():
                if session.replica == replica:
                    session.slot %= max(slots_total, 1)
                    session.warm = False

    def engine_restarted(self, replica: str = "") -> None:
        """``replica``'s engine lost its KV cache: none of its sessions is warm any more."""
        for key in self._slot_last:
            if key[0] == replica:
                self._slot_last[key] = None
        for session in self._sessions.values():
            if session.replica == replica:
                session.warm = False

    def slot_used(self, slot: int | None, session_id: str | None, replica: str = "") -> None:
        """A task (of ``session_id``, or of none) completed on ``slot`` of ``replica``."""
        if slot is not None and (replica, slot) in self._slot_last:
            self._slot_last[replica, slot] = session_id

    def task_ended(
        self,
        session: Session,
        task: Task,
        now: float,
        *,
        tokens_out: int,
        tokens_in: int | None,
        cached: int,
        slot: int | None,
    ) -> None:
        """Account for the end of ``session``'s task in progress, whatever the ending."""
        if session.live is task:
            session.live = None
        session.tokens_out += tokens_out
        session.tokens_in += tokens_in or 0
        session.cached_tokens += cached
        if task.dispatched_at is not None:
            session.wall_s += now - task.dispatched_at
            if self.config.wall_budget_s:  # a turn is cut when the budget runs out
                session.wall_s = min(session.wall_s, self.config.wall_budget_s)
        session.last_active_at = now
        session.warm = slot is not None and slot == session.slot
        if session.live is None and self._sessions.get(session.id) is session:
            heapq.heappush(self._expiry, (now + self.config.ttl_s, session.id))

    def kv_warm(self, session: Session) -> bool:
        """Whether the session's slot holds its conversation, as far as orchestra saw."""
        return session.warm and self._slot_last.get((session.replica, session.slot)) == session.id

    def delete(self, session_id: str) -> Session | None:
        """Forget a session; it is returned (its task in progress is the caller's)."""
        return self._sessions.pop(session_id, None)

    def next_expiry(self) -> float:
        """When the next idle session may expire (inf when none may)."""
        return self._expiry[0][0] if self._expiry else math.inf

    def expire(self, now: float) -> list[Session]:
        """Forget the sessions idle for ``ttl_s``; the forgotten ones."""
        gone = []
        while self._expiry and self._expiry[0][0] <= now:
            _, session_id = heapq.heappop(self._expiry)
            session = self._sessions.get(session_id)
            if session is None or session.live is not None:
                continue
            if session.last_active_at + self.config.ttl_s <= now:
                del self._sessions[session_id]
                gone.append(session)
        return gone

    def view(self, session: Session, now: float) -> SessionView:
        """A snapshot of ``session``."""
        ttl_left = None
        if session.live is None:
            ttl_left = max(0, round((session.last_active_at + self.config.ttl_s - now) * 1000))
        return SessionView(
            session_id=session.id,
            slot=session.slot,
            replica=session.replica,
            turns=session.turns,
            max_turns=self.config.max_turns,
            tokens_in=session.tokens_in,
            tokens_out=session.tokens_out,
            cached_tokens=session.cached_tokens,
            wall_ms=round(session.wall_s * 1000),
            cost=round(session.tokens_out * self.config.cost_per_token, 9),
            budget_left=self.left(session),
            ttl_left_ms=ttl_left,
            kv_warm=self.kv_warm(session),
            task_id=None if session.live is None else session.live.id,
        )
