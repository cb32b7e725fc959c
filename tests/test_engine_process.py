"""orchestra as a real process owning the real llama-server: no engine survives it."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import trio

from .engine import free_port, require_engine
from .test_cli import orchestra_process, run_cli, write

STARTED = r"llama-server started \(pid (\d+)\)"


async def wait_gone(pid: int) -> None:
    """Return once process ``pid`` has exited (its pidfd turns readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
async def test_no_engine_outlives_orchestra(tmp_path: Path, how: str) -> None:
    require_engine()
    engine_url = f"http://127.0.0.1:{free_port()}"
    async with orchestra_process(tmp_path, engine_url, grace_s=5, extra="[replica]\n") as service:
        with trio.fail_after(120):
            pid = int((await service.wait_line(STARTED))[1])
            await service.wait_line(r"engine ready")
        assert alive(pid)
        if how == "SIGTERM":
            service.process.send_signal(signal.SIGTERM)  # drain, then stop the engine
        else:
            service.process.kill()  # orchestra runs no cleanup at all: PR_SET_PDEATHSIG
        with trio.fail_after(30):
            status = await service.process.wait()
            await wait_gone(pid)
        assert not alive(pid)
        assert status == (0 if how == "SIGTERM" else -signal.SIGKILL)


def test_engine_port_in_use_is_reported_at_start(tmp_path: Path) -> None:
    require_engine()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = (
            'bind_addr = "127.0.0.1:0"\n'
            f'[adapter]\nendpoint = "http://127.0.0.1:{port}"\n[replica]\n'
        )
        result = run_cli("serve", "--config", write(tmp_path, config))
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (from adapter.endpoint) is already in use" in result.stderr
