"""The client commands of the ``orchestra`` command line, built on :class:`AsyncClient`:
their arguments, and running each one.

``submit``, ``cancel``, ``status``, ``tasks``, ``caps``, ``health``, ``models``, ``ps``,
``load``, ``unload``, ``drain``, ``resume``, ``chat`` and ``artifact`` talk to a running
server at ``--url`` (default ``$ORCHESTRA_URL``, else ``http://127.0.0.1:8080``) with the
bearer token of ``$ORCHESTRA_TOKEN``. Each prints a short human-readable answer, or with
``--json`` the JSON of the SDK's typed object (``submit --stream --json``: one event per
line). Errors go to stderr as ``orchestra: CODE: message``; the exit status says what kind
of failure it was (:data:`orchestra.cli.exits.EXIT_HELP`).

The output is rendered by :mod:`orchestra.cli.render`, ``submit --stream`` is
:mod:`orchestra.cli.follow`, ``chat`` (a REPL over the OpenAI face) is
:mod:`orchestra.cli.chat`, ``artifact`` (the artifact registry) is
:mod:`orchestra.cli.artifacts`, and the exit statuses and error reports are
:mod:`orchestra.cli.exits`.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from orchestra.cli import artifacts, chat
from orchestra.cli.exits import EXIT_HELP, EXIT_INTERRUPTED, EXIT_OK, report
from orchestra.cli.follow import Follow
from orchestra.cli.render import (
    as_json,
    capability_lines,
    drained_line,
    field_lines,
    loaded_line,
    model_table,
    out,
    ps_table,
    queued,
    resident,
    resumed_line,
    task_table,
    unloaded_line,
)
from orchestra.errors import OrchestraError
from orchestra.sdk import AsyncClient, TaskRequest
from orchestra.sdk._async import DEFAULT_URL, URL_ENV, model_file
from orchestra.task import Determinism, Priority

_CLIENT_EXIT_HELP: Final = "\n".join(
    line for line in EXIT_HELP.splitlines() if not line.startswith("  1 ")
)

COMMANDS: Final = frozenset(
    {
        "submit",
        "cancel",
        "status",
        "tasks",
        "caps",
        "health",
        "models",
        "ps",
        "load",
        "unload",
        "drain",
        "resume",
        "chat",
        "artifact",
    }
)
"""The subcommands this module adds and runs."""

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
    """Add ``submit``, ``cancel``, ``status``, ``tasks``, ``caps``, ``health``, ``models``,
    ``ps``, ``load``, ``unload``, ``drain``, ``resume``, ``chat`` and ``artifact``."""
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
    submit.add_argument(
        "--model", metavar="ID", help="the model (an id or alias; default: the server's)"
    )

    for name, what in (("cancel", "cancel a task"), ("status", "show a task's state")):
        command = add(name, what, f"{what[0].upper()}{what[1:]}.")
        command.add_argument("task_id", metavar="TASK", help="the task id")
    tasks = add(
        "tasks",
        "list the running and waiting tasks",
        "List the tasks the server knows, no prompt and no text: the running ones first, "
        "then the waiting ones (soonest start first), then with --state those that ended "
        "(latest first). Each with its pool, state, priority, tokens sent of its "
        "max_tokens, age, its place in line and predicted start (waiting) or its run time, "
        "and its error code; then each failed task's error message. With --json: the "
        'answer of GET /v1/tasks, {"tasks": [...]}.',
    )
    tasks.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="queued, running, completed, cancelled or failed; repeatable or "
        "comma-separated (default: running,queued)",
    )
    tasks.add_argument("--pool", metavar="ID", help="only this pool's tasks")
    tasks.add_argument("--limit", type=int, metavar="N", help="at most N tasks (default 100)")
    add("caps", "show the server's capabilities", "Show what the server can do.")
    health = add("health", "show a pool's health", "Show one pool's health.")
    health.add_argument("--pool", default="default", metavar="ID", help="default: default")
    add(
        "models",
        "list the models and whether they are loaded",
        "List the models of the catalog: id (* the default model), aliases, residency "
        "(loaded, loading, unloaded, unloading, failed), memory (~ an estimate), pool, and "
        "when each was last used.",
    )
    add(
        "ps",
        "show the models loaded now",
        "Show the models loaded or loading: memory, tasks running and waiting, how long "
        "each has been idle, until when it stays loaded (its idle unload; kept: never "
        "unloaded), and its pool.",
    )
    load = add(
        "load",
        "load a model (by id, or a GGUF file)",
        "Load a model and wait until it is loaded. A PATH (with a / or ending in .gguf) "
        "is registered in the catalog first, under its file name without .gguf.",
    )
    load.add_argument("model", metavar="ID|PATH", help="a model id, or a GGUF file's path")
    unload = add(
        "unload",
        "unload a model",
        "Unload a model once its running tasks have ended (with --force at once, cancelling them).",
    )
    unload.add_argument("model", metavar="ID", help="the model id")
    unload.add_argument(
        "--force", action="store_true", help="cancel its running tasks instead of waiting"
    )
    drain = add(
        "drain",
        "stop a pool taking tasks and let its running ones finish",
        "Drain a pool: from now on a submission is refused (503 POOL_UNREADY) and nothing "
        "is dispatched; running tasks get --deadline-ms (default 30000) to end, then those "
        "that sent tokens are cancelled and the others requeued. Waiting tasks keep their "
        "place until resume. Answers once the drain is complete.",
    )
    drain.add_argument("--pool", default="default", metavar="ID", help="default: default")
    drain.add_argument(
        "--deadline-ms", type=int, metavar="N", help="how long running tasks get to finish"
    )
    resume = add(
        "resume",
        "end a drain: the pool takes tasks again",
        "End a drain: the pool takes and dispatches tasks again (a pool not drained is "
        "left as it is).",
    )
    resume.add_argument("--pool", default="default", metavar="ID", help="default: default")
    chat.add_arguments(
        add("chat", "chat with the model (a REPL over the OpenAI face)", chat.DESCRIPTION)
    )
    artifact = commands.add_parser(  # its actions have the common options, it has none
        "artifact",
        help="keep and read artifacts: put, get, ls, lineage, tag, rm",
        description=textwrap.fill(artifacts.DESCRIPTION, width=78),
        epilog=_CLIENT_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    artifacts.add_arguments(artifact, common, _CLIENT_EXIT_HELP)


# -- running a command ---------------------------------------------------------------------


def run_client_command(args: argparse.Namespace) -> int:
    """Run one client command (``args.command`` in :data:`COMMANDS`); its exit status."""
    if args.command == "chat":
        return chat.run_chat(args)
    if args.command == "artifact":
        return artifacts.run_artifact(args)
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
            if args.command == "load":
                return await _load(client, args)
            if args.command == "drain":
                return await _drain(client, args)
            return await _show(client, args)
        except OrchestraError as exc:
            return report(exc, args.url)


async def _show(client: AsyncClient, args: argparse.Namespace) -> int:
    """``cancel``, ``status``, ``tasks``, ``caps``, ``health``, ``models``, ``ps``,
    ``unload``, ``resume``: one call, one answer."""
    answer: Any
    render: Callable[[Any], str]
    if args.command == "cancel":
        answer, render = await client.cancel(args.task_id), field_lines
    elif args.command == "status":
        answer, render = await client.status(args.task_id), field_lines
    elif args.command == "caps":
        answer, render = await client.capabilities(), capability_lines
    elif args.command == "health":
        answer, render = await client.health(args.pool), field_lines
    elif args.command == "tasks":
        states = None if args.state is None else ",".join(args.state)
        listed = await client.list_tasks(state=states, pool=args.pool, limit=args.limit)
        # the wire's shape, so that --json prints what GET /v1/tasks answers
        answer, render = {"tasks": listed}, task_table
    elif args.command == "resume":
        answer, render = await client.resume(args.pool), resumed_line
    elif args.command == "unload":
        answer = await client.unload_model(args.model, force=args.force)
        render = unloaded_line
    elif args.command == "ps":
        loaded = [model for model in await client.models() if resident(model)]
        answer, render = {"object": "list", "data": loaded}, ps_table
    else:
        # the wire's list shape, so that --json prints what GET /v1/models answers
        answer, render = {"object": "list", "data": await client.models()}, model_table
    if args.json:
        out(as_json(answer) + "\n")
    else:
        out(render(answer))
    return EXIT_OK


async def _load(client: AsyncClient, args: argparse.Namespace) -> int:
    """``load``: "loading ID…" on stderr, then the model loaded (and how long it took)."""
    print(f"loading {model_file(args.model)[0]}…", file=sys.stderr, flush=True)
    began = time.monotonic()
    model = await client.load_model(args.model)
    out(as_json(model) + "\n" if args.json else loaded_line(model, time.monotonic() - began))
    return EXIT_OK


async def _drain(client: AsyncClient, args: argparse.Namespace) -> int:
    """``drain``: "draining POOL…" on stderr, then what the drain did."""
    print(f"draining {args.pool}…", file=sys.stderr, flush=True)
    drained = await client.drain(args.pool, deadline_ms=args.deadline_ms)
    out(as_json(drained) + "\n" if args.json else drained_line(drained))
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
        model_ref=args.model,
    )


async def _submit(client: AsyncClient, args: argparse.Namespace, request: TaskRequest) -> int:
    if args.stream:
        return await Follow(client, json_lines=args.json).run(request)
    handle = await client.submit(request)
    if args.json:
        out(as_json(handle) + "\n")
    else:
        out(handle.task_id + "\n")
    print(queued(handle.queue_position, handle.predicted_start_ms), file=sys.stderr)
    return EXIT_OK
