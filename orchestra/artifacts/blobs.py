"""The artifacts' content files, all blocking: called only in worker threads.

Each content is one file named by its SHA-256 (``objects/ab/cdef…``, the first two hex
digits a directory, as git does). A file appears under its name whole or not at all:
it is written to ``tmp/`` under a random name, flushed and fsynced, renamed onto its
name (atomic on POSIX), and the directory holding it is fsynced, so the rename itself
survives a power cut. A second write of the same content replaces the file with the same
bytes. ``tmp/`` holds only writes in progress: what is there at start is left over from a
crash and is deleted (:func:`clear_tmp`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from orchestra.errors import CatalogError

OBJECTS: Final = "objects"
TMP: Final = "tmp"


def object_path(root: Path, id: str) -> Path:
    """Where the content of artifact ``id`` (``sha256:<hex>``) lives under ``root``."""
    hex_digest = id.removeprefix("sha256:")
    return root / OBJECTS / hex_digest[:2] / hex_digest[2:]


def make_dirs(root: Path) -> None:
    """Create ``root``, its ``objects/`` and ``tmp/`` (mode 0o700) unless they exist."""
    try:
        for path in (root, root / OBJECTS, root / TMP):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create the artifact directory {root}: {exc}") from exc


def write(root: Path, id: str, content: bytes) -> None:
    """Put ``content`` under its name: whole, durable, atomic (see the module docstring)."""
    final = object_path(root, id)
    tmp = root / TMP / f"{final.name[:16]}.{secrets.token_hex(8)}"
    try:
        final.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CatalogError(f"cannot write artifact {id} under {root}: {exc}") from exc


def read(root: Path, id: str) -> bytes:
    """The content of artifact ``id``, checked against its id."""
    path = object_path(root, id)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read artifact {id} ({path}): {exc}") from exc
    if "sha256:" + hashlib.sha256(content).hexdigest() != id:
        raise CatalogError(f"artifact {id} is damaged on disk ({path}): its hash differs")
    return content


def exists(root: Path, id: str, size: int) -> bool:
    """Whether the content file of ``id`` is there with ``size`` bytes."""
    try:
        return object_path(root, id).stat().st_size == size
    except OSError:
        return False


def remove(root: Path, id: str) -> None:
    """Delete the content of ``id``, if it is there."""
    path = object_path(root, id)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)


def stored(root: Path) -> Iterator[str]:
    """The ids of every content file there is (for reconciling with the index)."""
    objects = root / OBJECTS
    for folder in objects.iterdir():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            yield f"sha256:{folder.name}{path.name}"


def clear_tmp(root: Path) -> int:
    """Delete every unfinished write left in ``tmp/``; how many there were."""
    cleared = 0
    for path in (root / TMP).iterdir():
        with contextlib.suppress(OSError):
            path.unlink()
            cleared += 1
    return cleared


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
