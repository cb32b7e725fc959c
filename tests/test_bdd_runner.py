"""``scripts/bdd``: it runs the features ``$LLORCH_BDD_FEATURE_PATH`` names, and only those,
and refuses, saying why, a path that names none."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ROOT / "tests" / "features"
TIMEOUT_S = 300


def bdd(path: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LLORCH_BDD_FEATURE_PATH"}
    if path is not None:
        env["LLORCH_BDD_FEATURE_PATH"] = path
    return subprocess.run(
        [str(ROOT / "scripts" / "bdd"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def scenario_names(feature: Path) -> list[str]:
    return re.findall(r"^\s*Scenario: (.+)$", feature.read_text(), flags=re.MULTILINE)


def test_one_feature_file_runs_alone() -> None:
    run = bdd("tests/features/cli/capabilities.feature", "-m", "not real_engine")
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(re.findall(r"^Feature: (.+)$", run.stdout, flags=re.MULTILINE)) == {
        "Capabilities and versions"
    }
    ran = re.findall(r"^    Scenario: (.+)$", run.stdout, flags=re.MULTILINE)
    assert ran == ["The capabilities name the API version and the engine's version"]
    assert "1 passed, 1 deselected" in run.stdout


def test_a_directory_selects_the_features_under_it() -> None:
    run = bdd(str(FEATURES / "cli"), "--collect-only")  # an absolute path
    assert run.returncode == 0, run.stdout + run.stderr
    collected = re.findall(r"<Function (test_\w+)>", run.stdout)
    expected = [name for f in (FEATURES / "cli").glob("*.feature") for name in scenario_names(f)]
    assert len(collected) == len(expected) > 0
    assert "test_no_token_is_sent_after_a_cancel_returns" not in collected  # an MVP one


@pytest.mark.parametrize(
    "path", ["tests/features/nothing-here.feature", "orchestra", "README.md", "/nonexistent"]
)
def test_a_path_that_names_no_feature_fails_with_a_message(path: str) -> None:
    run = bdd(path)
    assert run.returncode == 2
    assert f"LLORCH_BDD_FEATURE_PATH={path} names no .feature file" in run.stderr
    assert run.stdout == ""  # pytest never ran


def test_the_step_module_refuses_a_bad_path_too(tmp_path: Path) -> None:
    """Run by pytest directly (not through the runner), a bad path is a collection error."""
    env = {**os.environ, "LLORCH_BDD_FEATURE_PATH": str(tmp_path)}
    run = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "pytest"), "tests/test_features.py", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert run.returncode != 0
    assert "names no .feature file" in run.stdout + run.stderr
