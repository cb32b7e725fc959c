"""Shared test set-up: hypothesis profiles, a private data directory per test."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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
