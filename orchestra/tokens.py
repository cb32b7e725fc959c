"""Where the bearer token comes from: ``auth.token``, a private ``auth.token_file``, or
``$ORCHESTRA_TOKEN``. :func:`orchestra.config.parse_config` resolves it once, at start;
the HTTP face's gate (:mod:`orchestra.http.auth`) then checks each request against it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

TOKEN_ENV = "ORCHESTRA_TOKEN"
"""The environment variable the server (and the SDK and CLI) read the token from."""


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token, or None."""
    if not all("!" <= c <= "~" for c in token):
        return "must be printable ASCII without spaces"
    return None


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace removed).

    Raises ValueError with the reason when the file cannot be read, is empty, holds an
    unusable token, or can be read or written by anyone but its owner (mode & 077).
    """
    file = Path(path).expanduser()
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{file} is not a regular file")
        if info.st_mode & 0o077:
            raise ValueError(
                f"{file} is readable or writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); a token file must be private: "
                f"chmod 600 {file}"
            )
        token = file.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{file} is not ASCII") from None
    if not token:
        raise ValueError(f"{file} is empty")
    problem = token_problem(token)
    if problem is not None:
        raise ValueError(f"the token in {file} {problem}")
    return token


def env_token() -> str:
    """``$ORCHESTRA_TOKEN``, or the empty string."""
    return os.environ.get(TOKEN_ENV, "").strip()
