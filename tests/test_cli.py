"""The ``orchestra`` command as a real process: exit codes, start-up, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from orchestra.testing.fake_llama import FakeLlamaServer

from .harness import parse_sse

ORCHESTRA = [sys.executable, "-m", "orchestra"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORCHESTRA, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "orchestra.toml"
    path.write_text(text)
    return str(path)


def test_help_and_usage_errors() -> None:
    shown = run_cli("--help")
    assert shown.returncode == 0
    assert "serve" in shown.stdout and "Exit status" in shown.stdout
    assert run_cli().returncode == 2
    assert run_cli("serve").returncode == 2  # --config is required


def test_config_errors_exit_2_one_line_each(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[admission]\nqueue_capacity = "many"\ncolour = 1\n[adapter]\nengin = "x"\n'
    )
    result = run_cli("serve", "--config", path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("config error: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {
        "admission.queue_capacity",
        "admission.colour",
        "adapter.engin",
    }


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_lan_bind_without_token_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", write(tmp_path, 'bind_addr = "0.0.0.0:8080"\n'))
    assert result.returncode == 2
    assert "auth.token: required when bind_addr (0.0.0.0:8080) is not loopback" in result.stderr


def test_owned_mode_with_missing_files_exits_2(tmp_path: Path) -> None:
    config = f'[replica]\nbinary = "{tmp_path}/no-such-server"\nmodel = "{tmp_path}/no.gguf"\n'
    result = run_cli("serve", "--config", write(tmp_path, config))
    assert result.returncode == 2
    assert f"replica.binary: {tmp_path}/no-such-server is not an executable file" in result.stderr
    assert f"replica.model: {tmp_path}/no.gguf is not a file" in result.stderr


def test_owned_mode_without_an_install_says_how(tmp_path: Path) -> None:
    empty_cache = {"ORCHESTRA_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli("serve", "--config", write(tmp_path, "[replica]\n"), env=empty_cache)
    assert result.returncode == 2
    assert "run `orchestra engine install`" in result.stderr


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--config", write(tmp_path, f'bind_addr = "127.0.0.1:{port}"\n'))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@attrs.define
class Service:
    process: trio.Process
    url: str
    lines: list[str]
    changed: list[trio.Event]

    async def wait_line(self, pattern: str) -> re.Match[str]:
        """The first log line matching ``pattern``, once it has been written."""
        while True:
            for line in self.lines:
                if found := re.search(pattern, line):
                    return found
            await self.changed[0].wait()


@asynccontextmanager
async def orchestra_process(
    tmp_path: Path, engine_url: str, grace_s: float, extra: str = ""
) -> AsyncIterator[Service]:
    """Start ``python -m orchestra serve`` and wait for its 'listening' line (its log is
    JSON Lines on stdout; ``Service.lines`` holds each line's ``msg``)."""
    config = write(
        tmp_path,
        f'bind_addr = "127.0.0.1:0"\nshutdown_grace_s = {grace_s}\n'
        f'[adapter]\nendpoint = "{engine_url}"\n' + extra,
    )
    lines: list[str] = []
    changed = [trio.Event()]
    listening = trio.Event()
    url: list[str] = []
    process = await trio.lowlevel.open_process(
        [*ORCHESTRA, "serve", "--config", config],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    async def drain_stdout() -> None:
        assert process.stdout is not None
        pending = b""
        async for chunk in process.stdout:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = json.loads(raw)["msg"]
                lines.append(line)
                changed[0].set()
                changed[0] = trio.Event()
                found = re.search(r"listening on (http://\S+?)[;,]", line)
                if found and not listening.is_set():
                    url.append(found.group(1))
                    listening.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_stdout)
        try:
            with trio.fail_after(30):
                await listening.wait()
            yield Service(process, url[0], lines, changed)
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_running_work_and_exits_0(tmp_path: Path, signum: int) -> None:
    fake = FakeLlamaServer(token_delay_s=0.02)
    async with trio.open_nursery() as nursery:
        engine_url = await nursery.start(fake.serve)
        async with (
            orchestra_process(tmp_path, engine_url, grace_s=30) as service,
            httpx.AsyncClient(base_url=service.url, timeout=30) as client,
        ):
            task = (await client.post("/v1/tasks", json={"prompt": "p", "max_tokens": 40})).json()
            async with client.stream("GET", task["stream_url"]) as stream:
                raw = b""
                chunks = stream.aiter_raw()
                async for chunk in chunks:
                    raw += chunk
                    if b"event: token" in raw:
                        break
                service.process.send_signal(signum)
                with trio.fail_after(10):
                    while True:  # the server refuses new work once the drain began
                        late = await client.post(
                            "/v1/tasks", json={"prompt": "late", "max_tokens": 1}
                        )
                        if late.status_code == 503:
                            break
                        assert late.status_code == 202
                assert late.json()["code"] == "POOL_UNREADY"
                async for chunk in chunks:
                    raw += chunk
            events = parse_sse(raw)
            assert events[-1].event == "end"
            assert events[-1].data["tokens_out"] == 40
            with trio.fail_after(30):
                assert await service.process.wait() == 0
            assert any("draining" in line for line in service.lines)
            assert any("orchestra stopped" in line for line in service.lines)
        nursery.cancel_scope.cancel()
