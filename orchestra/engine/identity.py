"""What exactly is serving: the engine's version and the model's digest.

llama-server reports ``build_info: b0-unknown`` when built from the sdist and has no model
digest at all (llama-server-reference §5), so orchestra finds out both itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import trio

from orchestra.engine.cache import cache_root, stamp_beside
from orchestra.engine.process import scrubbed_env, version_line

_digests: dict[tuple[str, int, int], str] = {}

REMEMBERED_DIGESTS = "model-digests.json"
"""The file, in the cache root, that remembers each model file's digest by its path, size
and mtime, so that a restart does not hash the model again before starting the engine (a
4 GB GGUF takes seconds to hash, a 40 GB one a minute). Losing it costs one hash."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _version_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _recall(key: tuple[str, int, int]) -> str | None:
    """The remembered digest of this version of the file (None: not remembered)."""
    try:
        entry = json.loads((cache_root() / REMEMBERED_DIGESTS).read_text()).get(key[0])
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(entry, dict) and [entry.get("size"), entry.get("mtime_ns")] == [*key[1:]]:
        digest = entry.get("sha256")
        return digest if isinstance(digest, str) and len(digest) == 64 else None
    return None


def _remember(key: tuple[str, int, int], digest: str) -> None:
    """Remember ``digest`` for this version of the file (replacing the file's old entry and
    forgetting files that are gone, so the table stays as small as the models on disk); a
    cache that cannot be written costs the next start a hash, nothing else."""
    path = cache_root() / REMEMBERED_DIGESTS
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    table = {name: entry for name, entry in table.items() if os.path.exists(name)}
    table[key[0]] = {"size": key[1], "mtime_ns": key[2], "sha256": digest}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)  # readers see the old table or the new one, never half
    except OSError:
        temporary.unlink(missing_ok=True)


async def model_digest(path: Path) -> str:
    """``sha256:<hex>`` of a GGUF file, hashed in a worker thread once per version of the
    file (its path, size and mtime): remembered in this process and in the cache root's
    :data:`REMEMBERED_DIGESTS`, so a restart does not hash it again."""
    key = await trio.to_thread.run_sync(_version_key, path)
    if key not in _digests:
        digest = await trio.to_thread.run_sync(_recall, key)
        if digest is None:
            digest = await trio.to_thread.run_sync(_sha256, path)
            await trio.to_thread.run_sync(_remember, key, digest)
        _digests[key] = "sha256:" + digest
    return _digests[key]


async def engine_version(binary: Path) -> str:
    """The package version (when the binary came from ``orchestra engine install``) plus
    what ``llama-server --version`` prints."""
    installed = stamp_beside(binary)
    if installed is not None:
        return installed.engine_version
    result = await trio.run_process(
        [os.fspath(binary), "--version"],
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=scrubbed_env(),
    )
    reported = version_line((result.stdout + result.stderr).decode(errors="replace"))
    return f"llama-server ({reported or 'version unknown'})"
