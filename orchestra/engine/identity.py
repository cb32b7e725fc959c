"""What exactly is serving: the engine's version and the model's digest.

llama-server reports ``build_info: b0-unknown`` when built from the sdist and has no model
digest at all (llama-server-reference §5), so orchestra finds out both itself.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import trio

from orchestra.engine.cache import stamp_beside
from orchestra.engine.process import scrubbed_env, version_line

_digests: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _version_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


async def model_digest(path: Path) -> str:
    """``sha256:<hex>`` of a GGUF file, hashed in a worker thread and remembered by path,
    size and mtime, so it is computed once per file version."""
    key = await trio.to_thread.run_sync(_version_key, path)
    if key not in _digests:
        _digests[key] = "sha256:" + await trio.to_thread.run_sync(_sha256, path)
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
