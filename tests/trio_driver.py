"""Drive a Trio run from synchronous code, one settled step at a time.

Hypothesis' RuleBasedStateMachine calls plain methods; the system under test lives in a
Trio run with a MockClock (time moves only when a rule jumps it). :class:`TrioDriver`
hosts that run in a thread and executes each step with ``trio.from_thread.run``, then
waits until every task in the run is blocked, so each rule sees a settled system.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

T = TypeVar("T")


class TrioDriver:
    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._started.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the Trio run, then let everything settle."""

        async def step() -> T:
            result = await fn(*args)
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step, trio_token=self._token)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a synchronous ``fn(*args)`` in the Trio run, then let everything settle."""

        async def call() -> T:
            return fn(*args)

        return self.run(call)

    def jump(self, seconds: float) -> None:
        """Move the mock clock forward and let timers fire."""
        self.run_sync(self.clock.jump, seconds)

    def close(self) -> None:
        """End the run; re-raise anything that crashed inside it."""
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=10)
        if self._error is not None:
            raise self._error
