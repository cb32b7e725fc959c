"""How actors talk: a one-shot reply slot for request messages, the outcome a StreamSession
reports to the Queue, and the engine alarm the Queue raises for a replica's supervisor."""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs
import trio

from orchestra.errors import EngineError

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


@attrs.define(eq=False)
class EngineAlarm:
    """How the Queue tells a replica's supervisor that the engine looks wrong, without
    holding the supervisor (both are given the alarm when they are built).

    The Queue raises it (:meth:`suspect`: a stream could not reach the engine or lost it;
    :meth:`hung`: a stream went silent for ``decode_timeout_s``); the supervisor waits on
    it (:meth:`wait`) and takes what was raised (:meth:`take`). Raising is synchronous and
    never blocks; several raises before a take are one alarm (a hang wins).
    """

    _raised: trio.Event = attrs.field(factory=trio.Event, init=False)
    _hung: str | None = attrs.field(default=None, init=False)

    def suspect(self, detail: str) -> None:
        """The engine may be down: probe it now."""
        self._raised.set()

    def hung(self, detail: str) -> None:
        """The engine stopped making progress: an owning supervisor restarts it."""
        self._hung = detail
        self.suspect(detail)

    def is_raised(self) -> bool:
        """Raised since the last :meth:`take`."""
        return self._raised.is_set()

    async def wait(self) -> None:
        """Return once the alarm is raised (at once if it is)."""
        await self._raised.wait()

    def take(self) -> str | None:
        """Lower the alarm; why the engine hung, if it was raised for that."""
        hung, self._hung = self._hung, None
        if self._raised.is_set():
            self._raised = trio.Event()
        return hung


@attrs.define
class Doorbell:
    """A wake-up without a payload: many ring it, one waits on it (the Models actor,
    rung by every Queue when a task waits for a load or a pool falls idle).

    Ringing is synchronous and never blocks; rings before a wait are one wake-up, so
    nothing rung is missed. The waiter reads the state it cares about after waking.
    """

    _rung: trio.Event = attrs.field(factory=trio.Event, init=False)

    def ring(self) -> None:
        """Wake the waiter (now, or at its next :meth:`wait`)."""
        self._rung.set()

    async def wait(self) -> None:
        """Return once rung since the last wait returned."""
        await self._rung.wait()
        self._rung = trio.Event()


# -- what a StreamSession reports -------------------------------------------------------


@attrs.frozen
class Completed:
    """The engine finished the generation."""

    tokens_out: int
    decode_time_ms: float
    first_token_at: float | None = None
    """When the first token reached the log (Trio clock); None if none did."""
    tokens_in: int | None = None
    """Prompt tokens the engine evaluated, when it said."""
    cached_tokens: int = 0
    """Prompt tokens reused from the slot's cache."""
    slot: int | None = None
    """The engine slot that ran it."""
    stop_type: str = ""
    """Why the engine stopped: ``eos``, ``word``, ``limit`` (``n_predict`` reached), or
    ``tool_calls`` (a chat answer that calls tools)."""
    prompt_time_ms: float = 0.0
    vectors: tuple[tuple[float, ...], ...] | None = None
    """An embedding task's vectors, one per input."""
    artifact_id: str | None = None
    """The artifact its text was kept as, when the task asked for one."""
    artifact_error: str | None = None
    """Why its text could not be kept as the artifact it asked for."""

    @property
    def finish_reason(self) -> str:
        """OpenAI's name for why it stopped: ``length``, ``tool_calls`` or ``stop``."""
        return _FINISH_REASONS.get(self.stop_type, "stop")


_FINISH_REASONS = {"limit": "length", "tool_calls": "tool_calls"}


@attrs.frozen
class Failed:
    """The engine failed; ``tokens_sent`` says whether any token reached the log."""

    error: EngineError
    tokens_sent: int


@attrs.frozen
class Interrupted:
    """The session's scope was cancelled (the Queue already ended the task)."""


Outcome = Completed | Failed | Interrupted
