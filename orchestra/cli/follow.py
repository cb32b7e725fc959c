"""``orchestra submit --stream``: follow a task to its end, printing its tokens (or its
events as JSON lines), its queue position on stderr while it waits, and a summary at the
end; Ctrl-C cancels the task on the server.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import uuid
from typing import Final, TextIO

import attrs
import trio

from orchestra.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, report
from orchestra.cli.render import json_event, out, queued
from orchestra.errors import ErrorCode, OrchestraError
from orchestra.sdk import (
    AsyncClient,
    End,
    Error,
    Event,
    ServerError,
    Started,
    TaskFailed,
    TaskHandle,
    TaskRequest,
    Token,
)
from orchestra.task import TaskState

POLL_S: Final = 0.5
"""How often ``submit --stream`` asks for the queue position while its task waits."""
CANCEL_ON_INTERRUPT_S: Final = 5.0
"""How long ``submit --stream`` tries to cancel its task after Ctrl-C."""

_ERASE: Final = "\r\x1b[K"
"""Carriage return and erase-to-end-of-line: rewrites one terminal line in place."""


@attrs.define
class QueueLine:
    """The queue position of a waiting task, on stderr: one line rewritten in place on a
    terminal, else a plain line each time the position changes."""

    stream: TextIO
    tty: bool
    shown: bool = False
    last_position: int | None = None
    closed: bool = False

    def show(self, position: int, predicted_start_ms: int | None) -> None:
        if self.closed:
            return
        text = queued(position, predicted_start_ms)
        if self.tty:
            self.stream.write(_ERASE + text)
        elif position != self.last_position:
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()
        self.shown, self.last_position = True, position

    def close(self) -> None:
        """The task started (or the command ends): erase the line; show nothing more."""
        if self.tty and self.shown and not self.closed:
            self.stream.write(_ERASE)
            self.stream.flush()
        self.closed = True


@attrs.define
class Follow:
    """``submit --stream``: submit, then print the task's events until its end, showing
    its queue position while it waits; Ctrl-C cancels the task."""

    client: AsyncClient
    json_lines: bool
    queue_line: QueueLine = attrs.field(factory=lambda: QueueLine(sys.stderr, sys.stderr.isatty()))
    interrupted: bool = False
    pieces: int = 0
    """Token texts printed on the current stdout line (human output)."""
    queue_wait_ms: int = 0

    async def run(self, request: TaskRequest) -> int:
        if request.task_id is None:  # an id of our own, to cancel even a submission in flight
            request = attrs.evolve(request, task_id=uuid.uuid4().hex)
        task_id = request.task_id
        assert task_id is not None
        status = EXIT_FAILED
        async with trio.open_nursery() as nursery:
            await nursery.start(self._watch_interrupt, nursery.cancel_scope)
            try:
                status = await self._follow(await self.client.submit(request))
            except OrchestraError as exc:  # the submission's; the stream's are reported inside
                status = report(exc, self.client.url)
            nursery.cancel_scope.cancel()
        if not self.interrupted:
            return status
        self.queue_line.close()
        self._end_line()
        print(self._cancel_message(task_id, await self._cancel(task_id)), file=sys.stderr)
        return EXIT_INTERRUPTED

    async def _cancel(self, task_id: str) -> TaskState | OrchestraError | None:
        """Cancel the task, bounded in time: its state, the error, or None (timed out)."""
        with trio.move_on_after(CANCEL_ON_INTERRUPT_S):
            try:
                return (await self.client.cancel(task_id)).state
            except OrchestraError as exc:
                return exc
        return None

    @staticmethod
    def _cancel_message(task_id: str, outcome: TaskState | OrchestraError | None) -> str:
        if outcome is TaskState.CANCELLED:
            return f"cancelled task {task_id}"
        if isinstance(outcome, TaskState):  # it ended just before the interrupt
            return f"orchestra: interrupted; task {task_id} had already ended: {outcome}"
        if isinstance(outcome, ServerError) and outcome.code is ErrorCode.NOT_FOUND:
            return "orchestra: interrupted before the server admitted the task"
        why = f"no answer in {CANCEL_ON_INTERRUPT_S:.0f} s" if outcome is None else str(outcome)
        return f"orchestra: interrupted; could not cancel task {task_id}: {why}"

    async def _watch_interrupt(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self.interrupted = True
                scope.cancel()
                return

    async def _follow(self, handle: TaskHandle) -> int:
        poller = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._poll_queue, handle.task_id, poller)
            try:
                return await self._read(handle.task_id, poller)
            except OrchestraError as exc:  # caught here, not wrapped in the nursery's group
                return report(exc, self.client.url, before=self._end_line)
            finally:
                poller.cancel()
                self.queue_line.close()

    async def _read(self, task_id: str, poller: trio.CancelScope) -> int:
        async with self.client.stream(task_id) as events:
            async for event in events:
                if isinstance(event, Started):
                    poller.cancel()  # it cannot write again: no checkpoint before close()
                    self.queue_line.close()
                status = self._print(event)
                if status is not None:
                    return status
        raise AssertionError("a stream ends with its end or error event")  # the SDK's promise

    async def _poll_queue(self, task_id: str, scope: trio.CancelScope) -> None:
        """Show the queue position while the task waits (best effort: the stream reports
        the failures that matter)."""
        with scope, contextlib.suppress(OrchestraError):
            while True:
                snapshot = await self.client.status(task_id)
                if snapshot.state is not TaskState.QUEUED or snapshot.queue_position is None:
                    return  # started: the stream's started event erases the line
                self.queue_line.show(snapshot.queue_position, snapshot.predicted_start_ms)
                await trio.sleep(POLL_S)

    def _print(self, event: Event) -> int | None:
        """Print one event; the exit status once the stream is over, else None."""
        if self.json_lines:
            out(json_event(event) + "\n")
        elif isinstance(event, Token):
            out(event.text)
            self.pieces += 1
        if isinstance(event, Started):
            self.queue_wait_ms = event.queue_wait_ms
        elif isinstance(event, End):
            self._end_line(always=True)
            print(
                f"{event.tokens_out} tokens in {event.decode_time_ms:.0f} ms, "
                f"queued {self.queue_wait_ms} ms",
                file=sys.stderr,
            )
            return EXIT_OK
        elif isinstance(event, Error):
            self._end_line()
            failed = TaskFailed(
                code=event.code,
                message=event.message or str(event.code),
                retriable=event.retriable,
                retry_after_ms=event.retry_after_ms,
            )
            return report(failed, self.client.url)
        return None

    def _end_line(self, *, always: bool = False) -> None:
        """End the line of token texts on stdout (human output): after the last token, or
        early (an error, Ctrl-C) when some text is on it."""
        if not self.json_lines and (always or self.pieces):
            out("\n")
        self.pieces = 0
