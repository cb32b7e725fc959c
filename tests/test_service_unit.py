"""``orchestra service``: the systemd unit it writes, checked by ``systemd-analyze verify``,
and install / uninstall / status as a real process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestra.cli import service
from orchestra.config import parse_config

ORCHESTRA = [sys.executable, "-m", "orchestra"]


def unit_for(tmp_path: Path, *, user: bool, **raw: object) -> str:
    config = parse_config({"data_dir": str(tmp_path / "data"), **raw})
    plan = service.plan_unit(config, tmp_path / "orchestra.toml", user=user, exec_start=ORCHESTRA)
    return service.render_unit(plan)


def setting(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, re.MULTILINE)


@pytest.mark.parametrize("user", [False, True])
def test_the_unit_is_a_notify_service_with_a_watchdog_and_a_sandbox(
    tmp_path: Path, user: bool
) -> None:
    unit = unit_for(tmp_path, user=user)
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "WatchdogSec": "30",
        "KillMode": "mixed",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
    }.items():
        assert setting(unit, key) == [value], key
    assert setting(unit, "ExecStart") == [
        f"{sys.executable} -m orchestra serve --config {tmp_path / 'orchestra.toml'}"
    ]
    writable = setting(unit, "ReadWritePaths")[0].split()
    assert str(tmp_path / "data") in writable
    assert any(path.lstrip("-").endswith("orchestra") for path in writable[1:])  # the cache
    # GPU access stays: no device sandboxing at all.
    assert not setting(unit, "PrivateDevices")
    assert not setting(unit, "DevicePolicy")
    assert setting(unit, "WantedBy") == ["default.target" if user else "multi-user.target"]
    assert bool(setting(unit, "User")) is not user


def test_stop_timeout_outlasts_the_drain(tmp_path: Path) -> None:
    quick = int(setting(unit_for(tmp_path, user=True), "TimeoutStopSec")[0])
    assert quick > 30 + 10  # the default shutdown_grace_s and the sessions' exit grace
    owned = unit_for(
        tmp_path, user=True, shutdown_grace_s=120, replica={"stop_grace_s": 20, "model": "m"}
    )
    assert int(setting(owned, "TimeoutStopSec")[0]) > 120 + 20 + 10
    assert int(setting(owned, "TimeoutStartSec")[0]) > 300  # READY=1 waits for the model


def test_exec_start_is_the_running_orchestra(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Path(sys.executable).parent / "orchestra"
    if script.exists():
        monkeypatch.setattr(sys, "argv", [str(script), "service"])
        assert service.orchestra_command() == [str(script.resolve())]
    monkeypatch.setattr(sys, "argv", ["/nowhere/pytest"])
    assert service.orchestra_command() == [str(Path(sys.executable).absolute()), "-m", "orchestra"]


# Debian's systemd package has systemd-analyze; where it is missing (a minimal CI image, a
# Mac) the unit's syntax cannot be checked and the test says so.
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("user", [False, True])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, user: bool) -> None:
    path = tmp_path / "orchestra.service"
    path.write_text(unit_for(tmp_path, user=user))  # ExecStart: this Python, which exists
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # A misspelt value is only a warning ("..., ignoring"): any output is a failure.
    assert result.stderr.strip() == "", result.stderr


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``orchestra service ...`` with a home of its own and no systemctl on PATH."""
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PATH": str(Path(sys.executable).parent),
    }
    return subprocess.run(
        [*ORCHESTRA, "service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_install_print_uninstall_status(tmp_path: Path) -> None:
    config = tmp_path / "orchestra.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    printed = run_cli(tmp_path, "install", "--user", "--config", str(config), "--print")
    assert printed.returncode == 0, printed.stderr
    assert "Type=notify" in printed.stdout
    target = tmp_path / "config" / "systemd" / "user" / "orchestra.service"
    assert not target.exists()  # --print installs nothing

    installed = run_cli(tmp_path, "install", "--user", "--config", str(config))
    assert installed.returncode == 0, installed.stderr
    assert target.read_text() == printed.stdout
    assert (tmp_path / "data").is_dir()
    assert "systemctl not found" in installed.stdout
    assert "systemctl --user enable --now orchestra" in installed.stdout

    status = run_cli(tmp_path, "status", "--user")
    assert status.returncode == 1
    assert "systemctl not found" in status.stderr

    removed = run_cli(tmp_path, "uninstall", "--user")
    assert removed.returncode == 0, removed.stderr
    assert not target.exists()


def test_install_without_a_config_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "install", "--user")
    assert result.returncode == 2
    assert "or pass --config FILE" in result.stderr
