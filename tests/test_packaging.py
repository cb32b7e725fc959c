"""The built wheel is a working orchestra on its own (what ``pipx install .`` installs).

The wheel is built from a copy of the sources (so no ``build/`` or ``*.egg-info`` lands in
the repository) with the project venv's setuptools (``--no-build-isolation --no-index``:
nothing is downloaded), and its contents are checked: the example configs as package data,
the fake engine, the JS SDK's and the status page's files, ``py.typed``, the entry point.

It is then installed twice, and run from each install. First by hand, the way pipx does, into
a fresh venv of its own: ``python -m venv`` + ``pip install --python``, offline: the wheel goes
in with ``--no-deps`` and the venv sees the project venv's site-packages through a ``.pth``
line (a directory named in a .pth file is only put on sys.path: the editable install's own
.pth finder there is not run, so the repository's orchestra stays invisible, which the test
checks). Then with pipx itself, a dev dependency (``.venv/bin/pipx``, beside the test's
python), as the README says: the real thing, dependencies and all, from the index pip is
configured with here (pip.conf, ``PIP_*``: pipx's pip reads them as any pip does), in
directories of the test's own. That one needs the index (as ``scripts/bootstrap`` does) and
takes about ten seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

from orchestra import API_VERSION, __version__

ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = sysconfig.get_paths()["purelib"]  # the project venv's: orchestra's deps
EXAMPLES = sorted(path.name for path in (ROOT / "configs").glob("*.toml"))

pytestmark = pytest.mark.slow


def _run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )
    assert result.returncode == 0, (
        f"{command}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """orchestra's wheel, built from a copy of the sources."""
    top = tmp_path_factory.mktemp("packaging")
    source = top / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    # symlinks=True: orchestra/configs stays the symlink to configs/ that git keeps.
    shutil.copytree(ROOT / "orchestra", source / "orchestra", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "configs", source / "configs", ignore=ignore)
    before = {path.name for path in ROOT.iterdir()}
    _run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-build-isolation", "--no-index", source, "-w", top / "dist",
    )  # fmt: skip
    assert {path.name for path in ROOT.iterdir()} == before  # nothing left in the repo
    (built,) = (top / "dist").glob("orchestra-*.whl")
    return built


def test_the_wheel_holds_what_orchestra_needs(wheel: Path) -> None:
    assert wheel.name == f"orchestra-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        configs = {
            name.removeprefix("orchestra/configs/"): archive.read(name)
            for name in names
            if name.startswith("orchestra/configs/")
        }
        info = f"orchestra-{__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    # The example configs, the very bytes of configs/ (their source of truth).
    assert sorted(configs) == EXAMPLES
    assert all(configs[name] == (ROOT / "configs" / name).read_bytes() for name in EXAMPLES)
    # Every module of the package, the fake engine among them.
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "orchestra").rglob("*.py")}
    assert modules <= names
    assert "orchestra/testing/fake_llama/__main__.py" in names
    # The JS SDK the server serves from package data, and the typing marker.
    assert {
        "orchestra/http/static/sdk/orchestra.js",
        "orchestra/http/static/sdk/orchestra.d.ts",
    } <= names
    # The status page: every file of static/ui/ (the server serves the folder's files, as
    # the package data's "static/ui/*" takes them), index.html among them.
    ui = ROOT / "orchestra" / "http" / "static" / "ui"
    assert ui.is_dir(), f"{ui} is missing: the status page's files are package data"
    page = {str(path.relative_to(ROOT)) for path in ui.iterdir() if path.is_file()}
    assert "orchestra/http/static/ui/index.html" in page, f"no index.html in {ui}"
    assert not page - names, f"not in the wheel: {sorted(page - names)}"
    assert "orchestra/py.typed" in names
    # Nothing beside the package: no tests, no top-level configs/.
    assert {name.split("/")[0] for name in names} == {"orchestra", info}
    assert "[console_scripts]\norchestra = orchestra.cli:main" in entry_points
    assert f"Version: {__version__}" in metadata and "License-Expression: MIT" in metadata


def _check_installed(python: Path, script: Path, work: Path) -> None:
    """The installed orchestra runs, from its own venv, with its package data."""
    version = _run(script, "--version", cwd=work).stdout
    assert version == f"orchestra {__version__} (API {API_VERSION})\n"
    example = work / "orchestra.toml"
    example.write_text(_run(script, "config", "example", cwd=work).stdout)
    assert example.read_bytes() == (ROOT / "configs" / "orchestra.toml").read_bytes()
    assert _run(script, "config", "example", "--list", cwd=work).stdout.split() == [
        name.removesuffix(".toml") for name in EXAMPLES
    ]
    check = f"""
import pathlib, sys
import orchestra
from orchestra.config import load_config
from orchestra.cli.configs import examples
from orchestra.http.static import static_blueprint
here = pathlib.Path(orchestra.__file__).resolve()
assert here.is_relative_to(pathlib.Path(sys.prefix).resolve()), here  # not the repo's
load_config({str(example)!r})
for name, path in examples().items():
    if name in ("orchestra", "attached", "cuda"):  # the whole-file examples
        load_config(str(path))
static_blueprint()  # reads the JS SDK's and the status page's files from package data
print("ok")
"""
    assert _run(python, "-c", check, cwd=work).stdout == "ok\n"
    fake = _run(python, "-m", "orchestra.testing.fake_llama", "--help", cwd=work).stdout
    assert "A fake llama-server" in fake


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
        monkeypatch.delenv(name, raising=False)


def _see_project_deps(python: Path) -> None:
    """Let the venv of ``python`` import orchestra's dependencies from the project venv."""
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(purelib.stdout.strip()) / "orchestra-test-deps.pth").write_text(SITE_PACKAGES + "\n")


@pytest.mark.usefixtures("clean_env")
def test_the_wheel_installed_in_a_venv_of_its_own_works(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "--disable-pip-version-check", "--no-deps", "--no-index", wheel,
    )  # fmt: skip
    _see_project_deps(python)
    _check_installed(python, venv / "bin" / "orchestra", tmp_path)


def _pipx() -> Path:
    """The project venv's pipx (a dev dependency), beside the test's python, else on PATH."""
    beside = Path(sys.executable).with_name("pipx")
    found = beside if beside.is_file() else shutil.which("pipx")
    assert found is not None, "pipx is a dev dependency: run scripts/bootstrap"
    return Path(found)


@pytest.mark.usefixtures("clean_env")
def test_pipx_installs_the_wheel(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pipx's every directory is the test's (the shared pip too: PIPX_SHARED_LIBS unset means
    # PIPX_HOME/shared), and no PIPX_* of the caller's (a backend, a cooldown) changes the run.
    for name in [name for name in os.environ if name.startswith("PIPX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIPX_HOME", str(tmp_path / "pipx"))
    monkeypatch.setenv("PIPX_BIN_DIR", str(tmp_path / "bin"))
    monkeypatch.setenv("PIPX_MAN_DIR", str(tmp_path / "man"))
    # The pip backend whether or not uv is on PATH (pipx would pick uv, which reads no
    # pip.conf): the machine's pip configuration is what finds the index.
    monkeypatch.setenv("PIPX_DEFAULT_BACKEND", "pip")
    # The real thing, dependencies and all, from the configured index: pipx reads the
    # metadata of every dependency after installing, so --no-deps is refused, and its shared
    # pip is reinstalled from the index too (keeping the bundled one instead, with
    # PIPX_DISABLE_SHARED_LIBS_AUTO_UPGRADE, is slower: that old pip resolves slowly).
    # --no-compile: no .pyc written for ~40 packages, a third of the time; Python compiles
    # what the checks import, as they run.
    _run(_pipx(), "install", "--python", sys.executable, "--pip-args=--no-compile", wheel)
    python = tmp_path / "pipx" / "venvs" / "orchestra" / "bin" / "python"
    _check_installed(python, tmp_path / "bin" / "orchestra", tmp_path)
