"""The catalog's argument checks: each returns a problem line naming the field, or None.

A problem line is what :class:`~orchestra.errors.Refusal` (``INVALID_PARAMS``) carries to
the HTTP client, so each one names its field and shows the value it got (:func:`show`).
:func:`path_problem` looks at the file and blocks: run it in a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from typing import Final

from orchestra.catalog.model import ID_PATTERN

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_GGUF_MAGIC: Final = b"GGUF"


def show(value: object) -> str:
    """A short, single-line rendering of an argument for a problem line."""
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 80 else value[:77] + "...")
    return f"a {type(value).__name__}"


def id_problem(id: object) -> str | None:
    if not isinstance(id, str):
        return f"id: must be a string (got {show(id)})"
    if ID_PATTERN.fullmatch(id) is None:
        return (
            "id: must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (got {show(id)})"
        )
    return None


def normal_sha256(sha256: object) -> tuple[str | None, str | None]:
    """``(normalised sha256, problem)``: lowercase hex without the ``sha256:`` prefix."""
    if sha256 is None:
        return None, None
    if not isinstance(sha256, str):
        return None, f"sha256: must be a string (got {show(sha256)})"
    hex_part = sha256[len("sha256:") :] if sha256.lower().startswith("sha256:") else sha256
    if _SHA256_HEX.fullmatch(hex_part) is None:
        return None, (
            'sha256: must be 64 hexadecimal characters, optionally prefixed "sha256:" '
            f"(got {show(sha256)})"
        )
    return hex_part.lower(), None


def path_problem(path: object) -> tuple[int | None, str | None]:
    """``(size in bytes, problem)`` for a model path. Blocking: run it in a thread."""
    if not isinstance(path, str):
        return None, f"path: must be a string (got {show(path)})"
    if not os.path.isabs(path):
        return None, f"path: must be absolute (got {show(path)})"
    if "\x00" in path or not path.isprintable():
        return None, f"path: must not contain control characters (got {show(path)})"
    try:
        path.encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        return None, f"path: not a valid file name on this system (got {show(path)})"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, f"path: no such file (got {show(path)})"
    except OSError as exc:
        return None, f"path: cannot be examined: {exc.strerror} (got {show(path)})"
    if not stat.S_ISREG(info.st_mode):
        return None, f"path: must be a regular file (got {show(path)})"
    try:
        with open(path, "rb") as source:
            magic = source.read(len(_GGUF_MAGIC))
    except OSError as exc:
        return None, f"path: cannot be read: {exc.strerror} (got {show(path)})"
    if magic != _GGUF_MAGIC:
        return None, f"path: not a GGUF file, it does not start with b'GGUF' (got {show(path)})"
    return info.st_size, None
