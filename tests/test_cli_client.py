"""The ``orchestra`` client commands as real child processes against a live server.

Each test starts the fake llama-server and orchestra in its own Trio run
(:func:`tests.harness.open_stack`) and runs ``python -m orchestra ...`` against it. Tasks
that must keep a slot busy use the fake's ``[[hang:N]]`` directive (N tokens, then nothing
until the task is cancelled), so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from orchestra.cli.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    exit_status,
)
from orchestra.cli.render import ms_duration, task_table
from orchestra.errors import ErrorCode, OrchestraError
from orchestra.sdk import (
    ParseError,
    QueueFull,
    ServerError,
    TaskFailed,
    TaskSummary,
    TransportError,
)
from orchestra.sdk._convert import structure

from .harness import Stack, open_stack

ORCHESTRA = [sys.executable, "-m", "orchestra"]
ONE_SLOT: dict[str, Any] = {
    "shutdown_grace_s": 0.0,  # a task left hanging is cancelled at once on stop
    "adapter": {"engine_backlog": 0},  # a second task waits in orchestra's queue
}
HANG = "[[hang:1]] holds its slot"
"""One token, then nothing until the task is cancelled."""
SUMMARY = re.compile(r"^(\d+) tokens in \d+ ms, queued \d+ ms$")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ORCHESTRA_URL", "ORCHESTRA_TOKEN")}
    return {**env, **extra}


@attrs.frozen
class Result:
    returncode: int
    stdout: str
    stderr: str


async def cli(
    *args: str, url: str | None = None, stdin: bytes = b"", env: dict[str, str] | None = None
) -> Result:
    """Run ``orchestra ARGS [--url URL]`` to its end."""
    command = [*ORCHESTRA, *args, *([] if url is None else ["--url", url])]
    with trio.fail_after(30):
        done = await trio.run_process(
            command,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env or _env(),
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def cli_all(*commands: Sequence[str], url: str | None = None) -> list[Result]:
    """Run several commands at once; their results in order."""
    results: list[Result | None] = [None] * len(commands)

    async def one(i: int, args: Sequence[str]) -> None:
        results[i] = await cli(*args, url=url)

    async with trio.open_nursery() as nursery:
        for i, args in enumerate(commands):
            nursery.start_soon(one, i, args)
    return [r for r in results if r is not None]


@attrs.define
class Child:
    """A CLI process whose stdout and stderr are read as they come."""

    process: trio.Process
    out: bytes = b""
    err: bytes = b""
    changed: trio.Event = attrs.field(factory=trio.Event)

    def _append(self, which: str, data: bytes) -> None:
        setattr(self, which, getattr(self, which) + data)
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, predicate: Callable[[Child], bool]) -> None:
        """Wait until ``predicate(self)`` holds (re-checked whenever output arrives)."""
        with trio.fail_after(30):
            while not predicate(self):
                await self.changed.wait()

    async def wait(self) -> int:
        with trio.fail_after(30):
            return await self.process.wait()

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode().replace("\r\n", "\n")  # a pty's output processing


async def _pump(child: Child, which: str, stream: trio.abc.ReceiveStream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                child._append(which, chunk)
        except (trio.BrokenResourceError, OSError):  # a pty's master reads EIO at the end
            pass
    child.changed.set()


@asynccontextmanager
async def spawn(*args: str, url: str, tty_stderr: bool = False) -> AsyncIterator[Child]:
    """Start ``orchestra ARGS --url URL``, stderr on a pseudo-terminal when ``tty_stderr``."""
    master = slave = -1
    if tty_stderr:
        master, slave = os.openpty()
    process = await trio.lowlevel.open_process(
        [*ORCHESTRA, *args, "--url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave if tty_stderr else subprocess.PIPE,
        env=_env(),
    )
    child = Child(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(_pump, child, "out", process.stdout)
            if tty_stderr:
                os.close(slave)
                slave = -1
                nursery.start_soon(_pump, child, "err", trio.lowlevel.FdStream(master))
                master = -1  # the FdStream owns it now
            else:
                assert process.stderr is not None
                nursery.start_soon(_pump, child, "err", process.stderr)
            yield child
            with trio.fail_after(30):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


async def server_tokens(stack: Stack, task_id: str) -> str:
    """The token texts the server sent for a task."""
    return "".join(e.data["t"] for e in await stack.stream(task_id) if e.event == "token")


async def cancel(stack: Stack, *task_ids: str) -> None:
    for task_id in task_ids:
        response = await stack.client.post(f"/v1/tasks/{task_id}/cancel")
        assert response.status_code == 200, response.text


def assert_within(mine: Any, wire: Any) -> None:
    """``mine`` (the SDK's JSON) is ``wire`` (the server's) less fields the SDK ignores."""
    if isinstance(mine, dict):
        assert isinstance(wire, dict) and mine.keys() <= wire.keys(), (mine, wire)
        for key, value in mine.items():
            assert_within(value, wire[key])
    elif isinstance(mine, list):
        assert isinstance(wire, list) and len(mine) == len(wire)
        for item, wire_item in zip(mine, wire, strict=True):
            assert_within(item, wire_item)
    else:
        assert mine == wire


# -- usage -----------------------------------------------------------------------------------


async def test_help_documents_the_exit_codes_and_usage_errors_exit_2() -> None:
    top, submit_help, no_prompt, bad_url, bad_priority = await cli_all(
        ["--help"],
        ["submit", "--help"],
        ["submit"],
        ["caps", "--url", "ftp://example"],
        ["submit", "p", "--priority", "urgent"],
    )
    assert top.returncode == EXIT_OK and submit_help.returncode == EXIT_OK
    for shown in (top.stdout, submit_help.stdout):
        assert "Exit status" in shown
        assert re.search(r"^  3 +refused by the server", shown, re.M)
        assert re.search(r"^  4 +server, engine or connection failure", shown, re.M)
        assert re.search(r"^  130 +interrupted", shown, re.M)
    for command in ("submit", "cancel", "status", "tasks", "caps", "health", "models", "drain"):
        assert re.search(rf"^    {command} ", top.stdout, re.M), command
    assert "--max-tokens" in submit_help.stdout and "--stream" in submit_help.stdout
    for usage in (no_prompt, bad_url, bad_priority):
        assert usage.returncode == EXIT_USAGE, usage
        assert "usage: orchestra" in usage.stderr
    assert "expected an http:// or https:// URL" in bad_url.stderr
    from_env = await cli("caps", env=_env(ORCHESTRA_URL="localhost:8080"))
    assert from_env.returncode == EXIT_USAGE
    assert "$ORCHESTRA_URL" in from_env.stderr


async def test_nothing_listening_exits_4() -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        caps, submit = await cli_all(["caps"], ["submit", "p", "--stream"], url=url)
    for result in (caps, submit):
        assert result.returncode == EXIT_FAILED, result
        assert result.stderr.startswith(f"orchestra: TRANSPORT_ERROR: no answer from {url}")
        assert result.stdout == ""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ServerError(code=ErrorCode.INVALID_PARAMS, message="m", status=400), EXIT_REFUSED),
        (ServerError(code=ErrorCode.UNAUTHORIZED, message="m", status=401), EXIT_REFUSED),
        (QueueFull(code=ErrorCode.ADMISSION_REJECT, message="m", status=429), EXIT_REFUSED),
        (ServerError(code=ErrorCode.INTERNAL, message="m", status=500), EXIT_FAILED),
        (ServerError(code=ErrorCode.WORKER_RESET, message="m", status=502), EXIT_FAILED),
        (TaskFailed(code=ErrorCode.CANCELLED, message="m"), EXIT_FAILED),
        (TransportError("refused", request_sent=False), EXIT_FAILED),
        (ParseError("not JSON", 200), EXIT_FAILED),
        (ParseError("a proxy's HTML page", 502), EXIT_FAILED),
        (ParseError("a proxy's HTML page", 403), EXIT_REFUSED),  # still a 4xx answer
    ],
)
def test_exit_status_of_each_error(error: OrchestraError, status: int) -> None:
    assert exit_status(error) == status


# -- information commands --------------------------------------------------------------------


async def test_caps_health_models_human_and_json(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    # the fake engine serves it; it is written once orchestra is up, so the engine's model
    # was not there to adopt into the catalog, which starts empty
    async with open_stack(model_path=str(model)) as stack:
        url = stack.running.urls[0]
        empty = await cli("models", url=url)
        model.write_bytes(b"GGUF" + bytes(2000))
        registered = await stack.client.post(
            "/v1/catalog/models",
            json={
                "id": "tiny",
                "path": str(model),
                "sha256": sha256(model.read_bytes()).hexdigest(),
            },
        )
        assert registered.status_code == 201, registered.text
        caps, caps_json, health, health_json, models, models_json, no_pool = await cli_all(
            ["caps"],
            ["caps", "--json"],
            ["health"],
            ["health", "--json", "--pool", "default"],
            ["models"],
            ["models", "--json"],
            ["health", "--pool", "nope"],
            url=url,
        )
        wire_caps = (await stack.client.get("/v1/capabilities")).json()
        wire_models = (await stack.client.get("/v1/models")).json()
    assert empty.returncode == EXIT_OK and empty.stdout == "no models in the catalog\n"
    for result in (caps, caps_json, health, health_json, models, models_json):
        assert result.returncode == EXIT_OK, result
        assert result.stderr == ""

    assert f"api_version: {wire_caps['api_version']}" in caps.stdout
    assert re.search(r"^pool default: ready, slots 0/1 busy, queue 0$", caps.stdout, re.M)
    limits = wire_caps["limits"]
    assert (
        f"limits: queue_capacity {limits['queue_capacity']}, max_tokens {limits['max_tokens']}"
        in caps.stdout
    )
    assert_within(json.loads(caps_json.stdout), wire_caps)

    assert "pool_id: default\n" in health.stdout and "ready: yes\n" in health.stdout
    assert "slots_total: 1\n" in health.stdout
    health_parsed = json.loads(health_json.stdout)
    assert health_parsed["pool_id"] == "default" and health_parsed["ready"] is True

    mine = json.loads(models_json.stdout)
    assert mine["object"] == wire_models["object"] == "list"
    assert len(mine["data"]) == len(wire_models["data"]) > 0
    moving = ("idle_s", "last_used")  # the clock moves between the two reads
    assert_within(
        [{k: v for k, v in m.items() if k not in moving} for m in mine["data"]],
        wire_models["data"],
    )
    header, *rows = models.stdout.splitlines()
    assert rows[-1] == "* the default model"
    rows = rows[:-1]
    assert header.split() == ["ID", "ALIASES", "RESIDENCY", "MEMORY", "POOL", "LAST", "USED"]
    assert len(rows) == len(wire_models["data"])
    tiny = next(row.split() for row in rows if row.startswith("tiny"))
    served = wire_models["data"][0]
    assert served["loaded"] is True and isinstance(served["context"], int)
    assert served["residency"] == "loaded" and served["pool"] == "default"
    assert tiny[0].rstrip("*") == "tiny" and tiny[1:3] == ["-", "loaded"] and "default" in tiny

    assert no_pool.returncode == EXIT_REFUSED
    assert no_pool.stderr.startswith("orchestra: NOT_FOUND: ")


async def test_token_comes_from_the_environment() -> None:
    async with open_stack(auth={"token": "cli-token", "optional": False}) as stack:
        url = stack.running.urls[0]
        refused = await cli("caps", url=url)
        accepted = await cli("caps", url=url, env=_env(ORCHESTRA_TOKEN="cli-token"))
        via_env_url = await cli("health", env=_env(ORCHESTRA_TOKEN="cli-token", ORCHESTRA_URL=url))
    assert refused.returncode == EXIT_REFUSED
    assert refused.stderr.startswith("orchestra: UNAUTHORIZED: ")
    assert accepted.returncode == EXIT_OK, accepted
    assert via_env_url.returncode == EXIT_OK and "pool_id: default" in via_env_url.stdout


# -- submit, status, cancel ------------------------------------------------------------------


async def test_submit_status_cancel() -> None:
    async with open_stack(slots=1, **ONE_SLOT) as stack:
        url = stack.running.urls[0]
        plain = await cli("submit", "hello", "--max-tokens", "4", "--seed", "3", url=url)
        assert plain.returncode == EXIT_OK, plain
        task_id = plain.stdout.removesuffix("\n")
        assert re.fullmatch(r"[0-9a-f]{32}", task_id)
        assert re.fullmatch(r"queued at position 0, predicted start in \d+ ms\n", plain.stderr), (
            plain.stderr
        )
        await stack.wait_state(task_id, "completed")

        status, status_json, cancel_done = await cli_all(
            ["status", task_id], ["status", task_id, "--json"], ["cancel", task_id], url=url
        )
        assert status.returncode == EXIT_OK
        assert f"task_id: {task_id}\nstate: completed\n" in status.stdout
        assert "tokens_out: 4\n" in status.stdout and "queue_position: -\n" in status.stdout
        snapshot = json.loads(status_json.stdout)
        assert snapshot["state"] == "completed" and snapshot["tokens_out"] == 4
        assert snapshot["error_code"] is None
        assert cancel_done.returncode == EXIT_OK and "state: completed\n" in cancel_done.stdout

        prompt = "from stdin, with options"
        handle_run = await cli(
            "submit", "-", "--json", "--task-id", "mine-1", "--max-tokens", "2", "--temperature",
            "0.5", "--top-p", "0.9", "--top-k", "40", "--stop", "x", "--stop", "y",
            "--priority", "batch", "--determinism", "best_effort",
            url=url, stdin=prompt.encode(),
        )  # fmt: skip
        assert handle_run.returncode == EXIT_OK, handle_run
        handle = json.loads(handle_run.stdout)
        assert handle["task_id"] == "mine-1" and handle["stream_url"].endswith("/mine-1/stream")
        assert set(handle) == {"task_id", "queue_position", "predicted_start_ms", "stream_url"}
        await stack.wait_state("mine-1", "completed")
        body = stack.fake.completion_bodies[-1]
        assert prompt in body["prompt"]
        assert body["temperature"] == 0.5 and body["top_k"] == 40 and body["top_p"] == 0.9
        assert set(body["stop"]) >= {"x", "y"}

        busy = await stack.submit(prompt=HANG, max_tokens=8)
        cancelled = await cli("cancel", busy["task_id"], "--json", url=url)
        assert cancelled.returncode == EXIT_OK
        assert json.loads(cancelled.stdout) == {"task_id": busy["task_id"], "state": "cancelled"}


async def test_refusals_exit_3() -> None:
    async with open_stack(slots=1, admission={"queue_capacity": 1}, **ONE_SLOT) as stack:
        url = stack.running.urls[0]
        running = await stack.submit(prompt=HANG, max_tokens=8)
        waiting = await stack.submit(prompt="waits", max_tokens=2)  # the queue is full now
        full, unknown_status, unknown_cancel, invalid, conflict = await cli_all(
            ["submit", "one more"],
            ["status", "no-such-task"],
            ["cancel", "no-such-task"],
            ["submit", "p", "--max-tokens", "100000", "--temperature", "-1"],
            ["submit", "different body", "--task-id", waiting["task_id"]],
            url=url,
        )
        await cancel(stack, running["task_id"], waiting["task_id"])
    for refused in (full, unknown_status, unknown_cancel, invalid, conflict):
        assert refused.returncode == EXIT_REFUSED, refused
        assert refused.stdout == ""
    assert full.stderr.startswith("orchestra: ADMISSION_REJECT: the queue is full")
    assert re.search(r"^orchestra: queue full; retry in \d+ s$", full.stderr, re.M)
    assert unknown_status.stderr.startswith("orchestra: NOT_FOUND: ")
    assert unknown_cancel.stderr.startswith("orchestra: NOT_FOUND: ")
    first, *problems = invalid.stderr.splitlines()
    assert first.startswith("orchestra: INVALID_PARAMS: ")
    assert any("max_tokens" in p for p in problems) and any("temperature" in p for p in problems)
    assert all(p.startswith("  ") for p in problems)
    assert conflict.stderr.startswith("orchestra: CONFLICT: ")


# -- submit --stream -------------------------------------------------------------------------


async def test_stream_prints_the_tokens_the_server_sent() -> None:
    async with open_stack(token_delay_s=0.001) as stack:
        url = stack.running.urls[0]
        human, ndjson = await cli_all(
            ["submit", "tell me", "--stream", "--task-id", "s-1", "--max-tokens", "16"],
            ["submit", "tell me", "--stream", "--json", "--task-id", "s-2", "--max-tokens", "3"],
            url=url,
        )
        sent = await server_tokens(stack, "s-1")
        sent_json = await server_tokens(stack, "s-2")
    assert human.returncode == EXIT_OK, human
    assert len(sent) > 0 and human.stdout == sent + "\n"
    summary = SUMMARY.match(human.stderr.removesuffix("\n"))  # no queue line: it ran at once
    assert summary and summary.group(1) == "16", human.stderr

    assert ndjson.returncode == EXIT_OK, ndjson
    events = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert [e["event"] for e in events] == ["started", "token", "token", "token", "end"]
    assert "".join(e["text"] for e in events if e["event"] == "token") == sent_json
    assert [e["index"] for e in events if e["event"] == "token"] == [0, 1, 2]
    assert events[0]["queue_wait_ms"] >= 0 and events[-1]["tokens_out"] == 3
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


async def test_stream_ending_in_error_and_5xx_exit_4() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        url = stack.running.urls[0]
        async with spawn("submit", HANG, "--stream", "--task-id", "e-1", url=url) as child:
            await child.until(lambda c: c.stdout != "")  # its first token
            await cancel(stack, "e-1")
            assert await child.wait() == EXIT_FAILED
        sent = await server_tokens(stack, "e-1")
        worker_error = await cli(
            "submit", "[[error-mid:1]] p", "--stream", "--json", "--max-tokens", "4", url=url
        )
        drained = await stack.client.post("/v1/pools/default/drain", json={})
        assert drained.status_code == 200, drained.text
        unready = await cli("submit", "p", url=url)  # 503 while drained
    assert sent and child.stdout == sent + "\n"
    assert child.stderr.startswith("orchestra: CANCELLED: ")
    assert worker_error.returncode == EXIT_FAILED, worker_error
    last = json.loads(worker_error.stdout.splitlines()[-1])
    assert last["event"] == "error"
    assert worker_error.stderr.startswith(f"orchestra: {last['code']}: ")
    assert unready.returncode == EXIT_FAILED, unready
    assert unready.stderr.startswith("orchestra: POOL_UNREADY: ") and unready.stdout == ""


async def test_sigint_cancels_the_task_and_exits_130() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        url = stack.running.urls[0]
        async with spawn("submit", HANG, "--stream", "--task-id", "i-1", url=url) as child:
            await child.until(lambda c: c.stdout != "")  # its first token
            child.process.send_signal(signal.SIGINT)
            assert await child.wait() == EXIT_INTERRUPTED
        state = (await stack.client.get("/v1/tasks/i-1")).json()["state"]
    assert state == "cancelled"
    assert child.stderr.splitlines()[-1] == "cancelled task i-1"
    assert child.stdout.endswith("\n")


async def _queued_run(stack: Stack, *, tty: bool) -> Child:
    """``submit --stream`` for a task that waits at position 1, then 0, then runs."""
    url = stack.running.urls[0]
    running = await stack.submit(prompt=HANG, max_tokens=8)
    ahead = await stack.submit(prompt=HANG, max_tokens=8)
    async with spawn(
        "submit", "queued", "--stream", "--max-tokens", "2", url=url, tty_stderr=tty
    ) as child:
        # a terminal's line is rewritten at every poll, even when the position stays
        shown = 2 if tty else 1
        await child.until(lambda c: c.stderr.count("queued at position 1,") >= shown)
        await cancel(stack, ahead["task_id"])
        await child.until(lambda c: "queued at position 0," in c.stderr)
        await cancel(stack, running["task_id"])
        assert await child.wait() == EXIT_OK
    return child


async def test_queue_position_on_a_terminal_is_one_line_updated_in_place() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        child = await _queued_run(stack, tty=True)
    queue_part, _, rest = child.stderr.rpartition("\r\x1b[K")  # the last: the line erased
    assert SUMMARY.match(rest.removesuffix("\n")), child.stderr
    updates = queue_part.split("\r\x1b[K")
    assert updates[0] == ""  # each update begins with the rewrite
    assert len(updates) >= 4  # position 1 at least twice, then 0
    for update in updates[1:]:
        assert re.fullmatch(r"queued at position [01], predicted start in \d+ ms", update)
    assert "\n" not in queue_part
    assert child.stdout.count("\n") == 1


async def test_queue_position_elsewhere_is_a_plain_line_per_change() -> None:
    async with open_stack(**ONE_SLOT) as stack:
        child = await _queued_run(stack, tty=False)
    assert "\r" not in child.stderr and "\x1b" not in child.stderr
    *queue_lines, summary = child.stderr.splitlines()
    assert [line.split(",")[0] for line in queue_lines] == [
        "queued at position 1",
        "queued at position 0",
    ]
    assert all(re.fullmatch(r".*, predicted start in \d+ ms", line) for line in queue_lines)
    assert SUMMARY.match(summary)


async def test_a_reader_that_goes_away_is_not_an_error() -> None:
    """``orchestra submit --stream ... | head -c 1``: exit 0, no traceback."""
    async with open_stack(token_delay_s=0.01) as stack:
        command = [*ORCHESTRA, "submit", "x", "--stream", "--max-tokens", "200"]
        process = await trio.lowlevel.open_process(
            [*command, "--url", stack.running.urls[0]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        assert process.stdout is not None and process.stderr is not None
        with trio.fail_after(30):
            assert await process.stdout.receive_some(1)  # the first token arrived
            await process.stdout.aclose()  # ... and the reader leaves
            err = b""
            async for chunk in process.stderr:
                err += chunk
            await process.wait()
    assert process.returncode == EXIT_OK, err
    assert b"Traceback" not in err


# -- tasks, drain, resume --------------------------------------------------------------------


async def _first_token(stack: Stack, task_id: str) -> None:
    log = stack.running.actors.queue.log_of(task_id)
    assert log is not None
    with trio.fail_after(30):
        while log.tokens < 1:
            await log.wait_beyond(len(log))


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


async def test_tasks_lists_the_running_and_waiting_tasks() -> None:
    async with open_stack(slots=1, **ONE_SLOT) as stack:
        url = stack.running.urls[0]
        await stack.submit(prompt=HANG, max_tokens=8, task_id="t-run")
        await _first_token(stack, "t-run")
        await stack.submit(prompt="waits", max_tokens=2, task_id="t-wait", priority="batch")
        shown, as_json, queued_only, limited, bad_state, bad_limit, no_pool = await cli_all(
            ["tasks"],
            ["tasks", "--json"],
            ["tasks", "--state", "queued"],
            ["tasks", "--limit", "1"],
            ["tasks", "--state", "running,lost"],
            ["tasks", "--limit", "0"],
            ["tasks", "--pool", "nope"],
            url=url,
        )
        wire = (await stack.client.get("/v1/tasks")).json()
        await cancel(stack, "t-run")
        await stack.wait_state("t-wait", "completed")
        ended = await cli("tasks", "--state", "completed", "--state", "cancelled", url=url)
    for result in (shown, as_json, queued_only, limited, ended):
        assert (result.returncode, result.stderr) == (EXIT_OK, ""), result
    header, running, waiting = (_cells(line) for line in shown.stdout.splitlines())
    assert header == ["TASK", "POOL", "STATE", "PRIORITY", "TOKENS", "AGE", "START/RUN", "ERROR"]
    assert running[:5] == ["t-run", "default", "running", "interactive", "1/8"]
    assert waiting[:5] == ["t-wait", "default", "queued", "batch", "0/2"]
    assert re.fullmatch(r"\d+(ms|\.\ds)", running[5]) and running[7] == "-"
    assert re.fullmatch(r"\d+(ms|\.\ds)", running[6])  # its run time
    assert re.fullmatch(r"in \d+(ms|\.\ds) #0", waiting[6]), waiting  # start, place in line
    moving = ("age_ms", "run_ms", "predicted_start_ms")  # the clock moves between the reads
    mine = json.loads(as_json.stdout)
    assert [t["task_id"] for t in mine["tasks"]] == ["t-run", "t-wait"]
    assert_within(
        {"tasks": [{k: v for k, v in t.items() if k not in moving} for t in mine["tasks"]]}, wire
    )
    assert [_cells(line)[0] for line in queued_only.stdout.splitlines()] == ["TASK", "t-wait"]
    assert [_cells(line)[0] for line in limited.stdout.splitlines()] == ["TASK", "t-run"]
    for refused, code in (
        (bad_state, "INVALID_PARAMS"),
        (bad_limit, "INVALID_PARAMS"),
        (no_pool, "NOT_FOUND"),
    ):
        assert (refused.returncode, refused.stdout) == (EXIT_REFUSED, ""), refused
        assert refused.stderr.startswith(f"orchestra: {code}: "), refused.stderr
    rows = [_cells(line) for line in ended.stdout.splitlines()[1:]]
    assert [row[:5] for row in rows] == [
        ["t-wait", "default", "completed", "batch", "2/2"],
        ["t-run", "default", "cancelled", "interactive", "1/8"],
    ]
    assert [row[7] for row in rows] == ["-", "CANCELLED"]


async def test_drain_refuses_submissions_until_resume() -> None:
    async with open_stack(slots=1, **ONE_SLOT) as stack:
        url = stack.running.urls[0]
        drained = await cli("drain", "--deadline-ms", "1000", url=url)
        refused = await cli("submit", "p", url=url)
        again = await cli("drain", "--json", url=url)
        resumed, resumed_json, no_pool = await cli_all(
            ["resume"], ["resume", "--json"], ["drain", "--pool", "nope"], url=url
        )
        taken = await cli("submit", "p", "--max-tokens", "1", url=url)
        assert taken.returncode == EXIT_OK, taken
        await stack.wait_state(taken.stdout.strip(), "completed")
        nothing = await cli("tasks", url=url)
    assert drained.returncode == EXIT_OK, drained
    assert drained.stderr == "draining default…\n"
    assert re.fullmatch(
        r"default drained in \d+(ms|\.\ds): 0 finished, 0 cancelled, 0 requeued, 0 waiting\n",
        drained.stdout,
    ), drained.stdout
    assert refused.returncode == EXIT_FAILED and refused.stderr.startswith(
        "orchestra: POOL_UNREADY: "
    )
    assert again.returncode == EXIT_OK and json.loads(again.stdout)["state"] == "drained"
    assert (resumed.returncode, resumed.stdout) == (EXIT_OK, "default ready\n"), resumed
    assert json.loads(resumed_json.stdout) == {"pool_id": "default", "state": "ready"}
    assert no_pool.returncode == EXIT_REFUSED and no_pool.stderr.splitlines()[1].startswith(
        "orchestra: NOT_FOUND: "
    )
    assert (nothing.returncode, nothing.stdout) == (EXIT_OK, "no tasks\n")


def test_the_task_table_shows_waits_run_times_and_why_a_task_failed() -> None:
    base = {
        "pool": "default", "priority": "interactive", "queue_position": None,
        "predicted_start_ms": None, "tokens_out": 0, "max_tokens": 4, "replica": None,
        "attempts": 1, "age_ms": 0, "run_ms": None, "ended_ms_ago": None, "error_code": None,
        "error_message": None, "session_id": None, "face": "v1",
    }  # fmt: skip
    tasks = [
        {**base, "task_id": "a", "state": "queued", "queue_position": 3, "predicted_start_ms": 1040,
         "age_ms": 61_000},
        {**base, "task_id": "b", "state": "queued", "queue_position": None, "age_ms": 999},
        {**base, "task_id": "c", "state": "failed", "tokens_out": 2, "run_ms": 250_000,
         "age_ms": 4_000_000, "error_code": "WORKER_RESET", "error_message": "the engine died"},
    ]  # fmt: skip
    answer = {"tasks": [structure(t, TaskSummary, what="t") for t in tasks]}
    _, a, b, c, note = task_table(answer).splitlines()
    assert _cells(a)[4:] == ["0/4", "1m01s", "in 1.0s #3", "-"]
    assert _cells(b)[4:] == ["0/4", "999ms", "-", "-"]
    assert _cells(c)[2:] == ["failed", "interactive", "2/4", "1h06m", "4m10s", "WORKER_RESET"]
    assert note == "c: WORKER_RESET: the engine died"
    assert task_table({"tasks": ()}) == "no tasks\n"
    assert [ms_duration(ms) for ms in (0, 999, 1000, 59_949, 59_950, 3_600_000)] == [
        "0ms", "999ms", "1.0s", "59.9s", "1m00s", "1h00m",
    ]  # fmt: skip
