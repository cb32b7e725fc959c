"""``orchestra chat``: a conversation with the served model, over the OpenAI face
(``POST /v1/chat/completions``), through the SDK's :class:`~orchestra.sdk.Client`.

Each line read is one user turn; the whole conversation so far (``--system`` first) is
sent with it, and the answer is printed on stdout as it is generated. On a terminal a
``> `` prompt is shown on stderr; from a pipe or a file, each line is a turn and the
session ends at the end of the input. ``--json`` prints each answer whole, as one JSON
object per line, instead of streaming its text.

Ctrl-C during an answer cancels that turn on the server (``POST /v1/tasks/{id}/cancel``,
and the answer's stream is closed), leaves it out of the conversation, and goes back to
the prompt. Ctrl-C or Ctrl-D at the prompt (the end of the input) ends the session with
status 0. An error (no server, a refusal, a turn that failed on the server) is reported as
``orchestra: CODE: message`` on stderr and ends the session with its exit status.

The blocking ``Client`` (its Trio loop on a thread of its own) lets the main thread wait in
``input()`` and receive Ctrl-C as ``KeyboardInterrupt`` wherever it is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from typing import Final

from orchestra.cli.exits import EXIT_OK, report
from orchestra.cli.render import as_json, out
from orchestra.errors import ErrorCode, OrchestraError
from orchestra.sdk import ChatCompletion, ChatMessage, Client, ServerError, TaskState

PROMPT: Final = "> "
"""The prompt, on stderr, when stdin is a terminal."""

DESCRIPTION: Final = (
    "Chat with the served model over the OpenAI face (POST /v1/chat/completions), keeping "
    "the conversation. Each line is a user turn; the answer is printed on stdout as it "
    "comes (with --json: each answer whole, one JSON object per line). On a terminal a "
    "'> ' prompt is shown on stderr; from a pipe or a file each line is a turn (empty "
    "lines skipped) and the session ends at the end of the input. Ctrl-C during an answer "
    "cancels that turn on the server and returns to the prompt (the turn is left out of "
    "the conversation); Ctrl-C or Ctrl-D at the prompt exits 0. Any error ends the session "
    "with the exit status below."
)


def add_arguments(chat: argparse.ArgumentParser) -> None:
    """``orchestra chat``'s own options (``--url`` and ``--json`` are the common ones)."""
    chat.add_argument("--system", metavar="TEXT", help="a system message to begin with")
    chat.add_argument(
        "--model", default="default", help="the model, or the pool's name (default: default)"
    )
    chat.add_argument("--max-tokens", type=int, metavar="N", help="tokens per answer at most")
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    chat.add_argument(
        "--seed", type=int, metavar="N", help="a seed: the same conversation, the same answers"
    )


def run_chat(args: argparse.Namespace) -> int:
    """Run ``orchestra chat``; its exit status."""
    session = _Session(args, interactive=sys.stdin.isatty())
    try:
        with Client(args.url) as client:
            return session.run(client)
    except BrokenPipeError:
        # the reader of stdout went away (``| head``): not an error of ours; the answer's
        # stream was closed on the way out, which cancelled its task on the server
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


class _Session:
    """The conversation and the loop of turns."""

    def __init__(self, args: argparse.Namespace, *, interactive: bool) -> None:
        self.args = args
        self.interactive = interactive
        self.messages: list[ChatMessage] = []
        if args.system:
            self.messages.append(ChatMessage("system", args.system))

    def run(self, client: Client) -> int:
        if self.interactive:
            with contextlib.suppress(ImportError):  # not every platform has it
                import readline  # noqa: F401  (line editing and history for input())
        try:
            while (line := self._read()) is not None:
                if not line.strip():
                    continue
                self.messages.append(ChatMessage("user", line))
                try:
                    answer = self._turn(client)
                except OrchestraError as exc:
                    return report(exc, self.args.url)
                if answer is None:
                    self.messages.pop()  # cancelled: the turn is not part of the conversation
                else:
                    self.messages.append(answer.message)
        except KeyboardInterrupt:  # at the prompt, or between turns (an answer's is handled)
            if self.interactive:
                sys.stderr.write("\n")
        return EXIT_OK

    def _read(self) -> str | None:
        """The next line; None at the end of the input."""
        if self.interactive:
            sys.stderr.write(PROMPT)
            sys.stderr.flush()
        try:
            return input().removesuffix("\r")
        except EOFError:
            if self.interactive:
                sys.stderr.write("\n")
            return None

    def _turn(self, client: Client) -> ChatCompletion | None:
        """Ask for and print one answer; None when Ctrl-C cancelled it."""
        args = self.args
        task_id = uuid.uuid4().hex  # our own: a turn can be cancelled even before it began
        stream = client.stream_chat(
            self.messages,
            model=args.model,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            task_id=task_id,
        )
        printed = False
        try:
            with stream:  # leaving it closes the stream: the server cancels an unended task
                for delta in stream:
                    if delta.content and not args.json:
                        out(delta.content)
                        printed = True
            answer = stream.completion()
        except KeyboardInterrupt:
            if printed:
                out("\n")
            print(self._cancel(client, task_id), file=sys.stderr)
            return None
        except OrchestraError:
            if printed:
                out("\n")
            raise
        out(as_json(answer) + "\n" if args.json else "\n")
        return answer

    @staticmethod
    def _cancel(client: Client, task_id: str) -> str:
        """Cancel the interrupted turn's task on the server; what to say about it."""
        try:
            state = client.cancel(task_id).state
        except ServerError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return "orchestra: interrupted before the server admitted the turn"
            return f"orchestra: interrupted; could not cancel task {task_id}: {exc}"
        except OrchestraError as exc:
            return f"orchestra: interrupted; could not cancel task {task_id}: {exc}"
        if state is TaskState.CANCELLED:
            return f"cancelled task {task_id}"
        return f"orchestra: interrupted; task {task_id} had already ended: {state}"
