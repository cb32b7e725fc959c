"""``orchestra service install|uninstall|status``: orchestra as a systemd service.

``install`` writes ``orchestra.service`` (``~/.config/systemd/user/`` with ``--user``,
else ``/etc/systemd/system/``) and runs ``systemctl [--user] daemon-reload`` when
systemctl exists; ``--print`` prints the unit and installs nothing. The unit is
``Type=notify``: orchestra itself says ``READY=1``, ``STATUS=``, ``WATCHDOG=1`` and
``STOPPING=1`` (:mod:`orchestra.service.notify`). Every line is explained in
``specs/operations.md``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from orchestra.cli.exits import EXIT_NOT_STARTED, EXIT_OK, EXIT_USAGE
from orchestra.engine import cache

if TYPE_CHECKING:  # the configuration is read by install alone
    from orchestra.config import Config

UNIT_NAME = "orchestra.service"
WATCHDOG_SEC = 30
"""systemd restarts orchestra when no ``WATCHDOG=1`` came for this long (it pings every
half of it)."""
RESTART_SEC = 5
STOP_MARGIN_S = 15
"""Added to the drain's longest path for ``TimeoutStopSec``."""
START_MARGIN_S = 60
"""Added to an owned engine's ``start_timeout_s`` for ``TimeoutStartSec``."""


def add_service_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``service`` command and its actions."""
    service = commands.add_parser("service", help="install orchestra as a systemd service")
    actions = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help="write orchestra.service and run systemctl daemon-reload",
        description=(
            "Write a Type=notify unit running `orchestra serve --config FILE` with a "
            "watchdog and sandboxing, then `systemctl [--user] daemon-reload`; "
            "print the command that enables it."
        ),
    )
    install.add_argument("--user", action="store_true", help="a user unit (systemctl --user)")
    install.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration (default: $XDG_CONFIG_HOME/orchestra/orchestra.toml)",
    )
    install.add_argument(
        "--print", action="store_true", help="print the unit on stdout; install nothing"
    )
    for name, text in (("uninstall", "remove orchestra.service"), ("status", "systemctl status")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--user", action="store_true", help="the user unit")


def run_service_command(args: argparse.Namespace) -> int:
    """Run ``orchestra service ACTION``; the exit status."""
    if args.service_command == "install":
        return _install(user=args.user, config_file=args.config, print_only=args.print)
    if args.service_command == "uninstall":
        return _uninstall(user=args.user)
    return _status(user=args.user)


@attrs.frozen
class UnitPlan:
    """Everything the unit says, worked out from the configuration and the machine."""

    exec_start: list[str]
    config_file: Path
    user: bool
    run_as: str | None
    """``User=`` of a system unit (None: a user unit runs as its user)."""
    working_dir: Path
    data_dir: Path
    cache_dir: Path
    stop_timeout_s: int
    start_timeout_s: int | None
    environment: dict[str, str]


def orchestra_command() -> list[str]:
    """The running ``orchestra`` as an absolute command: ``sys.argv[0]`` when it is the
    ``orchestra`` script, else ``python -m orchestra``."""
    script = Path(sys.argv[0])
    if script.name == "orchestra":
        found = shutil.which(str(script)) if script.parent == Path() else str(script)
        if found and os.access(found, os.X_OK):
            return [str(Path(found).resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "orchestra"]


def default_config_file() -> Path:
    """``$XDG_CONFIG_HOME/orchestra/orchestra.toml`` (``~/.config`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orchestra" / "orchestra.toml"


def plan_unit(
    config: Config, config_file: Path, *, user: bool, exec_start: list[str] | None = None
) -> UnitPlan:
    """The unit for ``config`` (read from ``config_file``): the paths it writes, its
    timeouts, who runs it."""
    from orchestra.service import HTTP_GRACE_S, SESSION_EXIT_S

    run_as = None if user else (os.environ.get("SUDO_USER") or getpass.getuser())
    environment: dict[str, str] = {}
    if user or run_as is None:
        cache_dir = cache.cache_root()
        data_dir = config.data_path
    else:  # a system unit: that user's home, not root's
        home = Path(pwd.getpwnam(run_as).pw_dir)
        explicit = os.environ.get("ORCHESTRA_CACHE_DIR")
        cache_dir = Path(explicit) if explicit else home / ".cache" / "orchestra"
        data_dir = config.data_path if config.data_dir else home / ".local" / "share" / "orchestra"
    environment["ORCHESTRA_CACHE_DIR"] = str(cache_dir.absolute())
    if not config.data_dir:
        environment["XDG_DATA_HOME"] = str(data_dir.parent.absolute())
    graces = [model.stop_grace_s for model in config.models.values()]
    if config.replica is not None:
        graces.append(config.replica.stop_grace_s)
    engine_grace = max(graces, default=0.0)
    stop = config.shutdown_grace_s + SESSION_EXIT_S + HTTP_GRACE_S + engine_grace + STOP_MARGIN_S
    start = None
    if config.replica is not None:  # READY=1 waits for the owned engine's model to load
        start = int(config.replica.start_timeout_s + START_MARGIN_S)
    return UnitPlan(
        exec_start=exec_start or orchestra_command(),
        config_file=config_file.absolute(),
        user=user,
        run_as=run_as,
        working_dir=Path.cwd(),
        data_dir=data_dir.absolute(),
        cache_dir=cache_dir.absolute(),
        stop_timeout_s=int(stop + 0.999),
        start_timeout_s=start,
        environment=environment,
    )


def _quote(word: str) -> str:
    """One ExecStart word as systemd reads it."""
    if word and not any(c in word for c in " \t\"'\\;$%"):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped.replace("$", "$$")}"'


def render_unit(plan: UnitPlan) -> str:
    """The text of ``orchestra.service``."""
    command = " ".join(_quote(w) for w in [*plan.exec_start, "serve", "--config"])
    command += " " + _quote(str(plan.config_file))
    env = "".join(f"Environment={_quote(f'{k}={v}')}\n" for k, v in plan.environment.items())
    user = "" if plan.run_as is None else f"User={plan.run_as}\n"
    start = (
        ""
        if plan.start_timeout_s is None
        else "# READY=1 waits for the owned engine's model: replica.start_timeout_s + margin.\n"
        f"TimeoutStartSec={plan.start_timeout_s}\n"
    )
    home = "# The binary (pipx: ~/.local) and the config may be in a home: read-only, not hidden.\n"
    if plan.user:
        home += (
            "# A user unit gets this sandboxing through a user namespace (PrivateUsers=yes\n"
            "# implied; needs unprivileged user namespaces, on by default in Debian).\n"
        )
    after = "" if plan.user else "After=network-online.target\nWants=network-online.target\n"
    return f"""\
# Written by `orchestra service install{" --user" if plan.user else ""}`; see specs/operations.md.
[Unit]
Description=orchestra: a single-host LLM orchestrator in front of llama-server
{after}
[Service]
# orchestra speaks the notify protocol itself: READY=1 once it takes tasks, STATUS= lines,
# WATCHDOG=1 only while its Queues answer and its event loop runs, STOPPING=1 on drain.
Type=notify
NotifyAccess=main
{user}WorkingDirectory={_quote(str(plan.working_dir))}
ExecStart={command}
{env}Restart=on-failure
RestartSec={RESTART_SEC}
WatchdogSec={WATCHDOG_SEC}
{start}# SIGTERM drains: shutdown_grace_s, then the sessions' and HTTP's graces, then the engine's
# stop_grace_s; systemd waits longer than all of that before SIGKILL.
TimeoutStopSec={plan.stop_timeout_s}
# SIGTERM goes to orchestra alone, which drains and then stops its llama-server itself;
# only the final SIGKILL (after TimeoutStopSec) goes to the whole cgroup.
KillMode=mixed

# Hardening. orchestra writes only its data_dir and the engine cache; everything else is
# read-only to it.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={_quote(str(plan.data_dir))} -{_quote(str(plan.cache_dir))}
{home}ProtectHome=read-only
# llama-server's slot files go to a private /tmp that dies with the service.
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictNamespaces=yes
# Devices are left alone on purpose (no PrivateDevices=, no DevicePolicy=): a CUDA
# llama-server needs /dev/nvidia*, /dev/nvidia-uvm and friends, whose set differs by driver.

[Install]
WantedBy={"default.target" if plan.user else "multi-user.target"}
"""


def unit_path(*, user: bool) -> Path:
    """Where ``install`` writes the unit."""
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def _systemctl(user: bool, *args: str) -> int | None:
    """Run ``systemctl [--user] ARGS``; its exit status, None when there is no systemctl."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    command = [systemctl, *(["--user"] if user else []), *args]
    return subprocess.run(command, check=False).returncode


def _install(*, user: bool, config_file: str | None, print_only: bool) -> int:
    from orchestra.config import ConfigError, load_config

    path = Path(config_file) if config_file else default_config_file()
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        if not config_file:
            print(
                f"orchestra service install: write {path} (configs/orchestra.toml is a "
                "start) or pass --config FILE",
                file=sys.stderr,
            )
        return EXIT_USAGE
    plan = plan_unit(config, path, user=user)
    text = render_unit(plan)
    if print_only:
        sys.stdout.write(text)
        return EXIT_OK
    target = unit_path(user=user)
    try:
        plan.data_dir.mkdir(parents=True, exist_ok=True)  # ReadWritePaths= must exist
        if plan.run_as is not None and os.geteuid() == 0:
            shutil.chown(plan.data_dir, plan.run_as)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        print(f"orchestra service install: {exc}", file=sys.stderr)
        if not user:
            print("(a system unit needs root: sudo, or --user)", file=sys.stderr)
        return EXIT_NOT_STARTED
    print(f"wrote {target}")
    flag = "--user " if user else ""
    if _systemctl(user, "daemon-reload") is None:
        print("systemctl not found: load the unit yourself")
    print(f"enable and start it with: systemctl {flag}enable --now orchestra")
    print(f"follow its log with:      journalctl {flag}-u orchestra -f")
    return EXIT_OK


def _uninstall(*, user: bool) -> int:
    target = unit_path(user=user)
    if not target.exists():
        print(f"{target} is not there: nothing to remove")
        return EXIT_OK
    _systemctl(user, "disable", "--now", "orchestra")
    try:
        target.unlink()
    except OSError as exc:
        print(f"orchestra service uninstall: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    print(f"removed {target}")
    _systemctl(user, "daemon-reload")
    return EXIT_OK


def _status(*, user: bool) -> int:
    code = _systemctl(user, "status", "--no-pager", "orchestra")
    if code is None:
        print("orchestra service status: systemctl not found", file=sys.stderr)
        return EXIT_NOT_STARTED
    return code
