"""Shared test set-up: hypothesis profiles, a private data directory per test, and the
proof bundle's manifest, written after a run of the whole suite."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, settings

from orchestra.testing.fake_llama import FakeLlamaServer

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def fake() -> FakeLlamaServer:
    """A fake llama-server, not started (the fake engine's own tests use it)."""
    return FakeLlamaServer()


@pytest.fixture
async def client(fake: FakeLlamaServer, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of :func:`fake`, started on a loopback port. A module that defines a
    ``client`` fixture of its own uses that one."""
    url = await nursery.start(fake.serve)
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        yield http


@pytest.fixture(autouse=True)
def _private_data_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Services a test starts, in-process or as a child process, keep their state (the
    model catalog) in a fresh directory instead of the user's ~/.local/share/orchestra."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
    # A token in the developer's environment would guard every test server (and be sent by
    # every SDK client); tests that want one set it themselves.
    monkeypatch.delenv("ORCHESTRA_TOKEN", raising=False)


# -- the proof bundle's manifest ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
FIXTURES = TESTS / "fixtures"
BUNDLE = ROOT / "proof-bundle"
BUNDLE_FIXTURES = BUNDLE / "fixtures"
_STARTED = pytest.StashKey[float]()
_INCOMPLETE = (
    pytest.ExitCode.INTERRUPTED,
    pytest.ExitCode.INTERNAL_ERROR,
    pytest.ExitCode.USAGE_ERROR,
    pytest.ExitCode.NO_TESTS_COLLECTED,
)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.perf_counter()


def _ran_whole_suite(session: pytest.Session, exitstatus: int) -> bool:
    """Whether this run was the whole suite, to its end, in this process: no -k, -m,
    --deselect, --lf or test paths other than ``tests``; not --collect-only; not an xdist
    worker; not stopped early (-x, --maxfail, Ctrl-C)."""
    config = session.config
    option = config.option
    if hasattr(config, "workerinput") or option.collectonly:
        return False
    if option.keyword or option.markexpr or getattr(option, "deselect", None):
        return False
    if getattr(option, "lf", False) or exitstatus in _INCOMPLETE:
        return False
    if session.shouldstop or session.shouldfail:
        return False
    if config.args_source is pytest.Config.ArgsSource.ARGS:
        base = config.invocation_params.dir
        if any((base / arg).resolve() != TESTS for arg in config.args):
            return False
    elif (
        config.args_source is pytest.Config.ArgsSource.INVOCATION_DIR
        and config.invocation_params.dir.resolve() != TESTS
    ):
        return False
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return reporter is not None and not reporter.stats.get("deselected")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_fixtures() -> dict[str, str]:
    """Copy ``tests/fixtures`` (JSON fixtures and README) to ``proof-bundle/fixtures``,
    removing what is there and no longer in the source; the fixtures' sha256 by name."""
    sources = sorted(FIXTURES.glob("*.json"))
    readme = FIXTURES / "README.md"
    copied = [*sources, readme] if readme.is_file() else sources
    BUNDLE_FIXTURES.mkdir(parents=True, exist_ok=True)
    names = {path.name for path in copied}
    for stale in BUNDLE_FIXTURES.iterdir():
        if stale.name not in names:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    for path in copied:
        shutil.copyfile(path, BUNDLE_FIXTURES / path.name)
    return {path.name: _sha256(path) for path in sources}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After a run of the whole suite, write ``proof-bundle/manifest.json`` (versions, the
    fixtures' hashes, this run's counts) and copy the fixtures into the bundle."""
    if not _ran_whole_suite(session, exitstatus):
        return
    import orchestra  # imported here: the hook must not fail the run for a broken package

    config = session.config
    stats: dict[str, list[Any]] = config.pluginmanager.get_plugin("terminalreporter").stats
    started = config.stash.get(_STARTED, None)
    manifest = {
        "sdk_version": orchestra.__version__,
        "api_version": orchestra.API_VERSION,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fixtures": _copy_fixtures(),
        "last_test_run": {
            "passed": len(stats.get("passed", [])),
            "failed": len(stats.get("failed", [])),
            "skipped": len(stats.get("skipped", [])),
            "errors": len(stats.get("error", [])),
            "xfailed": len(stats.get("xfailed", [])),
            "xpassed": len(stats.get("xpassed", [])),
            "duration_s": None if started is None else round(time.perf_counter() - started, 2),
            "exit_status": int(exitstatus),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "command": shlex.join(["pytest", *config.invocation_params.args]),
        },
    }
    target = BUNDLE / "manifest.json"
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(target)
