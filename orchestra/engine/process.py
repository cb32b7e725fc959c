"""One llama-server process: started with explicit flags, drained, and stopped for sure.

:func:`run_engine` is the only place orchestra starts a process. The child gets

- every flag that matters spelled out (:meth:`EngineCommand.argv`), ``--fit off`` so
  llama.cpp does not quietly rewrite them, and a scrubbed environment (no ``LLAMA_*``);
- stdin from /dev/null, stdout and stderr drained line by line into orchestra's log;
- its own session (a Ctrl-C at orchestra's terminal reaches orchestra, which then drains
  before it stops the engine), and ``PR_SET_PDEATHSIG = SIGKILL``, so it dies with orchestra
  even when orchestra is killed with ``kill -9``.

The child is forked from the Trio thread itself, not from a worker thread: the death signal
fires when the *thread* that forked the child exits, and Trio's worker threads come and go.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import trio

from orchestra.config import AdapterConfig, ConfigError, ReplicaConfig
from orchestra.engine import cache as engine_cache

log = logging.getLogger("orchestra.engine")

PR_SET_PDEATHSIG = 1


def scrubbed_env() -> dict[str, str]:
    """The environment for llama-server: ours without ``LLAMA_*``/``HF_*``/``AIP_*``
    variables, which would silently change its flags or its port, nor systemd's
    ``NOTIFY_SOCKET``/``WATCHDOG_*`` (orchestra alone speaks to its service manager)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("LLAMA_", "HF_", "AIP_", "WATCHDOG_")) and name != "NOTIFY_SOCKET"
    }


def version_line(output: str) -> str:
    """The ``version: ...`` line of ``llama-server --version`` output ("" when absent)."""
    return next((line.strip() for line in output.splitlines() if line.startswith("version")), "")


@attrs.frozen(kw_only=True)
class EngineCommand:
    """Everything needed to start llama-server the same way every time."""

    binary: Path
    model: Path
    port: int
    ctx_size: int
    parallel: int
    threads: int
    gpu_layers: int
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    api_key: str = attrs.field(default="", repr=False)
    """The key llama-server demands on every endpoint but ``/health`` (passed in its
    environment as ``LLAMA_API_KEY``, so no other user sees it in the process list); empty
    for none."""

    embeddings: bool = False
    """Serve ``/v1/embeddings`` (``--embeddings``)."""
    slot_save_path: Path | None = None
    """A private directory for llama-server's slot files (``--slot-save-path``); setting it
    is what enables ``POST /slots/N?action=erase``, which deleting a session uses."""
    devices: str | None = None
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES``, e.g. ``0`` or ``1,2``);
    None leaves the variable as orchestra has it (every GPU)."""
    rpc_servers: tuple[str, ...] = ()
    """``host:port`` of llama.cpp ``rpc-server`` processes that hold part of the model
    (``--rpc``); the build must have RPC on (``orchestra engine install --rpc``)."""

    def env(self) -> dict[str, str]:
        """The environment to start llama-server with: :func:`scrubbed_env` plus the key
        and the devices."""
        env = scrubbed_env()
        if self.api_key:
            env["LLAMA_API_KEY"] = self.api_key
        if self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.devices
        return env

    def argv(self) -> list[str]:
        """The full command line."""
        return [
            str(self.binary),
            "-m", str(self.model),
            "--host", self.host,
            "--port", str(self.port),
            "-c", str(self.ctx_size),
            "-np", str(self.parallel),
            "-t", str(self.threads),
            "-ngl", str(self.gpu_layers),
            "--fit", "off",
            "--jinja",  # the model's own chat template, and tool calls (the OpenAI face)
            "--no-ui",
            *(("--slot-save-path", str(self.slot_save_path)) if self.slot_save_path else ()),
            *(("--embeddings", "--pooling", "mean") if self.embeddings else ()),
            *(("--rpc", ",".join(self.rpc_servers)) if self.rpc_servers else ()),
            *self.extra_args,
        ]  # fmt: skip


def resolve_command(
    replica: ReplicaConfig,
    adapter: AdapterConfig,
    *,
    table: str = "replica",
    model_key: str = "model",
    port_offset: int = 0,
) -> EngineCommand:
    """The command ``[replica]`` asks for, with the binary and model found on disk.

    An empty ``binary`` or ``model`` means what ``orchestra engine install`` cached. Raises
    :class:`ConfigError` naming each key whose file is missing (as ``table.key``; a
    ``[models.ID]`` table calls the model ``path``), and what to do about it. The engine
    listens on ``adapter.endpoint``'s port plus ``port_offset``.
    """
    problems: list[str] = []
    backend: engine_cache.Backend = "cuda" if replica.gpu_layers > 0 else "cpu"
    install_hint = "orchestra engine install" + (" --cuda" if backend == "cuda" else "")
    binary: Path | None = None
    if not replica.binary and replica.rpc_servers:
        # Layers go to the rpc-servers (``-ngl``) whatever this box has: the RPC build,
        # CUDA when one is cached, else the CPU one.
        rpc = engine_cache.installed_rpc_engine("cuda") or engine_cache.installed_rpc_engine("cpu")
        if rpc is None:
            problems.append(
                f"{table}.rpc_servers: needs llama.cpp's RPC build, and none is cached: run "
                f"`orchestra engine install --rpc`, or set {table}.binary to a llama-server "
                f"built with -DGGML_RPC=ON"
            )
        else:
            binary = rpc.binary
    elif not replica.binary:
        installed = engine_cache.installed_engine(backend)
        if installed is None:
            problems.append(
                f"{table}.binary: not set, and no {backend} build of llama-server is cached "
                f"yet: run `{install_hint}`, or set {table}.binary"
            )
        else:
            binary = installed.binary
    elif "/" not in replica.binary:
        found = shutil.which(replica.binary)
        if found is None:
            problems.append(f"{table}.binary: {replica.binary!r} is not on PATH")
        else:
            binary = Path(found)
    else:
        binary = Path(replica.binary).expanduser()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            problems.append(f"{table}.binary: {binary} is not an executable file")
    model: Path | None = None
    if not replica.model:
        model = engine_cache.installed_model()
        if model is None:
            problems.append(
                f"{table}.{model_key}: not set, and the small model is not cached yet: run "
                f"`{install_hint}`, or set {table}.{model_key} to a GGUF file"
            )
    else:
        model = Path(replica.model).expanduser()
        if not model.is_file():
            problems.append(f"{table}.{model_key}: {model} is not a file")
    if problems:
        raise ConfigError(problems)
    assert binary is not None and model is not None
    endpoint = urlsplit(adapter.endpoint)
    assert endpoint.hostname is not None and endpoint.port is not None  # config cross-check
    return EngineCommand(
        binary=binary,
        model=model.resolve(),
        host=endpoint.hostname,
        port=endpoint.port + port_offset,
        ctx_size=replica.ctx_size,
        parallel=replica.parallel,
        threads=replica.threads,
        gpu_layers=replica.gpu_layers,
        extra_args=replica.extra_args,
        rpc_servers=replica.rpc_servers,
    )


@attrs.frozen
class Exited:
    """How a llama-server process ended."""

    status: int
    """The exit status; negative for a signal, as in :mod:`subprocess`."""
    last_output: tuple[str, ...]
    """Its last lines of output, for the log and the health endpoint."""

    @property
    def detail(self) -> str:
        """``exited with status 1`` or ``killed by SIGKILL``, plus its last line."""
        if self.status < 0:
            try:
                how = f"killed by {signal.Signals(-self.status).name}"
            except ValueError:
                how = f"killed by signal {-self.status}"
        else:
            how = f"exited with status {self.status}"
        last = next((line for line in reversed(self.last_output) if line.strip()), "")
        return f"llama-server {how}" + (f" ({last})" if last else "")


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (a bind test, like the engine's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


_libc: ctypes.CDLL | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: SIGKILL it when its parent thread dies."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _spawn(command: EngineCommand, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    global _libc
    if _libc is None:
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
    return subprocess.Popen(
        command.argv(),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=command.env(),
        start_new_session=True,
        preexec_fn=partial(_die_with_parent, os.getpid()),
    )


async def _drain(fd: int, name: str, on_line: Callable[[str, str], None]) -> None:
    """Read one pipe to its end, handing each line to ``on_line``."""
    pending = b""
    async with trio.lowlevel.FdStream(fd) as stream:
        while chunk := await stream.receive_some(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(name, line.decode(errors="replace").rstrip("\r"))
    if pending:
        on_line(name, pending.decode(errors="replace"))


async def _wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for the process to exit (its pidfd turns readable, Linux 5.3+) and reap it."""
    pidfd = os.pidfd_open(process.pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return process.wait()


async def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, up to ``grace_s`` to exit, then SIGKILL; returns once it is reaped."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with trio.move_on_after(grace_s):
        await _wait(process)
        return
    log.warning("llama-server (pid %d) ignored SIGTERM for %.0f s: SIGKILL", process.pid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await _wait(process)


async def run_engine(
    command: EngineCommand,
    *,
    stop_grace_s: float,
    on_line: Callable[[str, str], None],
    task_status: trio.TaskStatus[subprocess.Popen[bytes]] = trio.TASK_STATUS_IGNORED,
) -> Exited:
    """Run llama-server until it exits; report the process once started (its ``kill()``
    is safe to call at any time: it does nothing once the process has been reaped).

    ``on_line(stream, line)`` receives every line it writes, ``stream`` being ``stdout`` or
    ``stderr``. Under cancellation the process is stopped (SIGTERM, ``stop_grace_s``,
    SIGKILL) inside a shielded scope, so this never returns while the child lives.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    process: subprocess.Popen[bytes] | None = None
    try:
        process = _spawn(command, out_write, err_write)
    finally:
        os.close(out_write)  # the child has its copies
        os.close(err_write)
        if process is None:  # it never started: nobody will read these
            os.close(out_read)
            os.close(err_read)
    tail: deque[str] = deque(maxlen=8)

    def remember(stream: str, line: str) -> None:
        tail.append(line)
        on_line(stream, line)

    try:
        async with trio.open_nursery() as pipes:
            pipes.start_soon(_drain, out_read, "stdout", remember)
            pipes.start_soon(_drain, err_read, "stderr", remember)
            task_status.started(process)
            status = await _wait(process)
        return Exited(status, tuple(tail))
    finally:
        if process.returncode is None:
            with trio.CancelScope(shield=True):
                await _stop(process, stop_grace_s)
