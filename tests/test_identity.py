"""A model's digest is hashed once per version of its file: remembered across restarts in
the cache root (``model-digests.json``), hashed again when the file changes, and never
trusted when the table is damaged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from orchestra.engine import identity


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(root))
    monkeypatch.setattr(identity, "_digests", {})  # a fresh process
    return root


def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count the files :func:`identity._sha256` really hashes from now on."""
    seen: list[Path] = []
    real = identity._sha256

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(identity, "_sha256", counting)
    return seen


def write_table(cache: Path, text: str) -> None:
    cache.mkdir(parents=True)
    (cache / identity.REMEMBERED_DIGESTS).write_text(text)


def restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "_digests", {})


async def test_a_restart_does_not_hash_the_model_again(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(1000))
    expected = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    seen = hashes(monkeypatch)
    assert await identity.model_digest(model) == expected
    restart(monkeypatch)
    assert await identity.model_digest(model) == expected
    assert seen == [model]  # hashed once, then read back from the cache root
    table = json.loads((cache / identity.REMEMBERED_DIGESTS).read_text())
    assert table[str(model.resolve())]["sha256"] == expected.removeprefix("sha256:")


async def test_a_changed_file_is_hashed_again(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"one")
    seen = hashes(monkeypatch)
    first = await identity.model_digest(model)
    model.write_bytes(b"two, longer")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    restart(monkeypatch)
    second = await identity.model_digest(model)
    assert second == "sha256:" + hashlib.sha256(b"two, longer").hexdigest() != first
    assert seen == [model, model]


@pytest.mark.parametrize(
    "damage",
    ["not json", "[1, 2]", json.dumps({"PATH": {"size": "x", "mtime_ns": 1, "sha256": "00"}})],
    ids=["not JSON", "not an object", "a wrong entry"],
)
async def test_a_damaged_table_is_not_trusted(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights")
    write_table(cache, damage.replace("PATH", str(model.resolve())))
    seen = hashes(monkeypatch)
    assert await identity.model_digest(model) == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    assert seen == [model]


async def test_files_that_are_gone_are_forgotten(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone, kept = tmp_path / "gone.gguf", tmp_path / "kept.gguf"
    gone.write_bytes(b"a")
    kept.write_bytes(b"b")
    await identity.model_digest(gone)
    gone.unlink()
    await identity.model_digest(kept)
    table = json.loads((cache / identity.REMEMBERED_DIGESTS).read_text())
    assert list(table) == [str(kept.resolve())]
