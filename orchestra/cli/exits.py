"""Exit statuses of the ``orchestra`` command, and the error report that ends a client
command with one: ``orchestra: CODE: message`` (and hints) on stderr.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Final

from orchestra.errors import ErrorCode, OrchestraError
from orchestra.sdk import ParseError, QueueFull, ServerError, TaskFailed, TransportError

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


def exit_status(exc: OrchestraError) -> int:
    """The exit status for an error: :data:`EXIT_REFUSED` for any 4xx answer, else
    :data:`EXIT_FAILED` (5xx, no answer, an answer outside the contract, a failed task)."""
    status = exc.status if isinstance(exc, ServerError | ParseError) else None
    if isinstance(exc, TaskFailed) or status is None:
        return EXIT_FAILED
    return EXIT_REFUSED if 400 <= status < 500 else EXIT_FAILED


def report(exc: OrchestraError, url: str, before: Callable[[], None] | None = None) -> int:
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
