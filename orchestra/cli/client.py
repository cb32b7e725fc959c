"""The client commands of the ``orchestra`` command line, built on :class:`AsyncClient`.

``submit``, ``cancel``, ``status``, ``caps``, ``health`` and ``models`` talk to a running
server at ``--url`` (default ``$ORCHESTRA_URL``, else ``http://127.0.0.1:8080``) with the
bearer token of ``$ORCHESTRA_TOKEN``. Each prints a short human-readable answer, or with
``--json`` the JSON of the SDK's typed object (``submit --stream --json``: one event per
line). Errors go to stderr as ``orchestra: CODE: message``; the exit status says what kind
of failure it was (:data:`EXIT_HELP`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TextIO

import attrs
import trio

from orchestra.errors import ErrorCode, OrchestraError
from orchestra.sdk import (
    AsyncClient,
    Capabilities,
    CatalogModel,
    End,
    Error,
    Event,
    ParseError,
    QueueFull,
    ServerError,
    Started,
    TaskFailed,
    TaskHandle,
    TaskRequest,
    Token,
    TransportError,
)
from orchestra.sdk._async import DEFAULT_URL, URL_ENV
from orchestra.sdk._models import converter
from orchestra.task import Determinism, Priority, TaskState

EXIT_OK: Final = 0
"""The command did what it was asked."""
EXIT_NOT_STARTED: Final = 1
"""``serve`` or ``engine install`` could not start (the address is in use, a build failed)."""
EXIT_USAGE: Final = 2
"""A usage or configuration error: bad arguments, a bad config file, a --url that is not
``http(s)://``."""
EXIT_REFUSED: Final = 3
"""The server refused the request: any 4xx answer (invalid params, unknown task, conflict,
auth, queue full)."""
EXIT_FAILED: Final = 4
"""The server, the engine or the connection failed: a 5xx answer, no answer, an answer
outside the contract, or a task whose stream ended with an error."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted by Ctrl-C (SIGINT); ``submit --stream`` cancels its task first."""

EXIT_HELP: Final = """\
Exit status:
  0    ok
  1    serve / engine install could not start
  2    usage or configuration error (also a --url that is not http:// or https://)
  3    refused by the server: a 4xx answer (invalid params, unknown task, conflict,
       auth, queue full)
  4    server, engine or connection failure: a 5xx answer, no answer, an answer
       outside the contract, a task whose stream ended with an error
  130  interrupted (Ctrl-C); submit --stream cancels its task on the server first"""

_CLIENT_EXIT_HELP: Final = "\n".join(
    line for line in EXIT_HELP.splitlines() if not line.startswith("  1 ")
)

COMMANDS: Final = frozenset({"submit", "cancel", "status", "caps", "health", "models"})
"""The subcommands this module adds and runs."""

POLL_S: Final = 0.5
"""How often ``submit --stream`` asks for the queue position while its task waits."""
CANCEL_ON_INTERRUPT_S: Final = 5.0
"""How long ``submit --stream`` tries to cancel its task after Ctrl-C."""

_ERASE: Final = "\r\x1b[K"
"""Carriage return and erase-to-end-of-line: rewrites one terminal line in place."""


# -- the parser ----------------------------------------------------------------------------


def _http_url(value: str) -> str:
    """``--url``: an ``http://`` or ``https://`` URL with a host."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL (from --url or ${URL_ENV}), got {value!r}"
        )
    return value


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``submit``, ``cancel``, ``status``, ``caps``, ``health`` and ``models``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        type=_http_url,
        default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"the server (default ${URL_ENV}, else {DEFAULT_URL}); "
        "the bearer token comes from $ORCHESTRA_TOKEN",
    )
    common.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help,
            description=textwrap.fill(description, width=78),
            epilog=_CLIENT_EXIT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    submit = add(
        "submit",
        "submit a task (and with --stream print its tokens)",
        "Submit a task. Without --stream: print its id on stdout (id=$(orchestra submit "
        "...)) and its queue position on stderr. With --stream: print its tokens as they "
        "come, its queue position on stderr while it waits, and a summary on stderr at "
        "the end; Ctrl-C cancels the task. With --json: the handle as JSON, or with "
        '--stream one JSON object per event per line, each with an "event" key.',
    )
    submit.add_argument("prompt", metavar="PROMPT", help="the prompt; - reads it from stdin")
    submit.add_argument("--max-tokens", type=int, metavar="N", help="tokens to generate at most")
    submit.add_argument(
        "--seed", type=int, metavar="N", help="with strict determinism, same seed same text"
    )
    submit.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    submit.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling")
    submit.add_argument("--top-k", type=int, metavar="K", help="top-k sampling")
    submit.add_argument(
        "--stop", action="append", metavar="TEXT", help="a stop string (repeatable)"
    )
    submit.add_argument("--task-id", metavar="ID", help="makes the submission idempotent")
    submit.add_argument("--priority", choices=[p.value for p in Priority])
    submit.add_argument("--determinism", choices=[d.value for d in Determinism])
    submit.add_argument("--stream", action="store_true", help="follow the task to its end")

    for name, what in (("cancel", "cancel a task"), ("status", "show a task's state")):
        command = add(name, what, f"{what[0].upper()}{what[1:]}.")
        command.add_argument("task_id", metavar="TASK", help="the task id")
    add("caps", "show the server's capabilities", "Show what the server can do.")
    health = add("health", "show a pool's health", "Show one pool's health.")
    health.add_argument("--pool", default="default", metavar="ID", help="default: default")
    add("models", "list the model catalog", "List the models of the catalog.")


# -- running a command ---------------------------------------------------------------------


def run_client_command(args: argparse.Namespace) -> int:
    """Run one client command (``args.command`` in :data:`COMMANDS`); its exit status."""
    prompt: str | None = None
    if args.command == "submit":
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        try:
            return trio.run(_run, args, prompt)
        except* BrokenPipeError:
            pass  # the reader went away (``| head``): handled below
    except KeyboardInterrupt:
        print("orchestra: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # Not an error of ours. Point stdout at /dev/null so the interpreter's final flush does
    # not fail again. A streamed task left behind is cancelled by the server once its stream
    # has had no reader for orphan_grace_ms.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


async def _run(args: argparse.Namespace, prompt: str | None) -> int:
    async with AsyncClient(args.url) as client:
        try:
            if args.command == "submit":
                assert prompt is not None
                return await _submit(client, args, _request(args, prompt))
            return await _show(client, args)
        except OrchestraError as exc:
            return _report(exc, args.url)


async def _show(client: AsyncClient, args: argparse.Namespace) -> int:
    """``cancel``, ``status``, ``caps``, ``health``, ``models``: one call, one answer."""
    answer: Any
    render: Callable[[Any], str]
    if args.command == "cancel":
        answer, render = await client.cancel(args.task_id), _fields
    elif args.command == "status":
        answer, render = await client.status(args.task_id), _fields
    elif args.command == "caps":
        answer, render = await client.capabilities(), _capabilities
    elif args.command == "health":
        answer, render = await client.health(args.pool), _fields
    else:
        answer, render = {"models": await client.models()}, _models
    if args.json:
        _out(_json(answer) + "\n")
    else:
        _out(render(answer))
    return EXIT_OK


def _request(args: argparse.Namespace, prompt: str) -> TaskRequest:
    return TaskRequest(
        prompt=prompt,
        max_tokens=args.max_tokens,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        stop=None if args.stop is None else tuple(args.stop),
        task_id=args.task_id,
        priority=None if args.priority is None else Priority(args.priority),
        determinism=None if args.determinism is None else Determinism(args.determinism),
    )


async def _submit(client: AsyncClient, args: argparse.Namespace, request: TaskRequest) -> int:
    if args.stream:
        return await _Follow(client, json_lines=args.json).run(request)
    handle = await client.submit(request)
    if args.json:
        _out(_json(handle) + "\n")
    else:
        _out(handle.task_id + "\n")
    print(_queued(handle.queue_position, handle.predicted_start_ms), file=sys.stderr)
    return EXIT_OK


# -- submit --stream -----------------------------------------------------------------------


@attrs.define
class _QueueLine:
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
        text = _queued(position, predicted_start_ms)
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
class _Follow:
    """``submit --stream``: submit, then print the task's events until its end, showing
    its queue position while it waits; Ctrl-C cancels the task."""

    client: AsyncClient
    json_lines: bool
    queue_line: _QueueLine = attrs.field(
        factory=lambda: _QueueLine(sys.stderr, sys.stderr.isatty())
    )
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
                status = _report(exc, self.client.url)
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
                return _report(exc, self.client.url, before=self._end_line)
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
            _out(_json_event(event) + "\n")
        elif isinstance(event, Token):
            _out(event.text)
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
            return _report(failed, self.client.url)
        return None

    def _end_line(self, *, always: bool = False) -> None:
        """End the line of token texts on stdout (human output): after the last token, or
        early (an error, Ctrl-C) when some text is on it."""
        if not self.json_lines and (always or self.pieces):
            _out("\n")
        self.pieces = 0


# -- output --------------------------------------------------------------------------------


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _queued(position: int, predicted_start_ms: int | None) -> str:
    when = "unknown" if predicted_start_ms is None else f"{predicted_start_ms} ms"
    return f"queued at position {position}, predicted start in {when}"


def _json(value: Any) -> str:
    return json.dumps(converter.unstructure(value))


_EVENT_NAMES: Final[Mapping[type, str]] = {
    Started: "started",
    Token: "token",
    End: "end",
    Error: "error",
}


def _json_event(event: Event) -> str:
    data = converter.unstructure(event)
    return json.dumps({"event": _EVENT_NAMES.get(type(event), "metrics"), **data})


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _fields(answer: Any) -> str:
    """An attrs object as ``name: value`` lines."""
    return "".join(
        f"{field.name}: {_value(getattr(answer, field.name))}\n"
        for field in attrs.fields(type(answer))
    )


def _capabilities(caps: Capabilities) -> str:
    lines = [f"api_version: {caps.api_version}", f"orchestra_version: {caps.orchestra_version}"]
    lines += [f"engine: {e.engine} {_value(e.engine_version)} ({e.mode})" for e in caps.engines]
    lines += [
        f"model: {_value(m.id)} digest {_value(m.digest)} ctx_max {_value(m.ctx_max)}"
        for m in caps.models
    ]
    lines += [
        f"pool {p.id}: {p.state}, slots {p.slots_busy}/{p.slots_total} busy, queue {p.queue_depth}"
        for p in caps.pools
    ]
    limits = caps.limits
    lines.append(
        f"limits: queue_capacity {limits.queue_capacity}, max_tokens {limits.max_tokens}, "
        f"ctx_limit {limits.ctx_limit}"
    )
    on = sorted(name for name, value in caps.features.items() if value is True)
    other = sorted(
        f"{name}={json.dumps(value)}"
        for name, value in caps.features.items()
        if not isinstance(value, bool)
    )
    lines.append(f"features: {', '.join([*on, *other]) or '-'}")
    return "".join(line + "\n" for line in lines)


def _models(answer: Mapping[str, Sequence[CatalogModel]]) -> str:
    models = answer["models"]
    if not models:
        return "no models in the catalog\n"
    header = ("ID", "LOADED", "TRUST", "STATE", "SIZE", "PATH")
    rows = [header] + [
        (m.id, _value(m.loaded), m.trust_state, m.state, _size(m.size_bytes), m.path)
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) + "\n"
        for row in rows
    )


def _size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- errors --------------------------------------------------------------------------------


def exit_status(exc: OrchestraError) -> int:
    """The exit status for an error: :data:`EXIT_REFUSED` for any 4xx answer, else
    :data:`EXIT_FAILED` (5xx, no answer, an answer outside the contract, a failed task)."""
    status = exc.status if isinstance(exc, ServerError | ParseError) else None
    if isinstance(exc, TaskFailed) or status is None:
        return EXIT_FAILED
    return EXIT_REFUSED if 400 <= status < 500 else EXIT_FAILED


def _report(exc: OrchestraError, url: str, before: Callable[[], None] | None = None) -> int:
    """Print ``orchestra: CODE: message`` (and hints) on stderr; the exit status."""
    if before is not None:
        before()
    lines: list[str]
    if isinstance(exc, ServerError):
        problems = [p for p in exc.problems if p != exc.message]  # one alone is the message
        lines = [f"{exc.code}: {exc.message}", *(f"  {problem}" for problem in problems)]
        if isinstance(exc, QueueFull):
            what = "queue full" if exc.code is ErrorCode.ADMISSION_REJECT else "budget spent"
            when = (
                "later"
                if exc.retry_after_ms is None
                else f"in {max(1, math.ceil(exc.retry_after_ms / 1000))} s"
            )
            lines.append(f"{what}; retry {when}")
    elif isinstance(exc, TransportError):
        lines = [f"TRANSPORT_ERROR: no answer from {url}: {exc}"]
    elif isinstance(exc, ParseError):
        lines = [f"PARSE_ERROR: {exc}"]
    else:
        lines = [f"{type(exc).__name__}: {exc}"]
    for line in lines:
        print(line if line.startswith("  ") else f"orchestra: {line}", file=sys.stderr)
    return exit_status(exc)
