"""Who may use the API: the bearer token, where it comes from, and the per-request gate.

The token is ``auth.token``, else the contents of ``auth.token_file`` (a file only its
owner may read), else ``$ORCHESTRA_TOKEN``; :func:`orchestra.config.parse_config` resolves
it once, at start. Each request then meets :class:`Gate`:

========================================  ================================================
request                                   answer
========================================  ================================================
an open path (``GET /health``)            let in, always (liveness only: it says nothing)
no token configured (loopback only)       let in
``Authorization: Bearer <the token>``     let in
an ``Authorization`` header, malformed    401 ``UNAUTHORIZED``
``Authorization: Bearer <another>``       403 ``FORBIDDEN``
no header, proxy identity trusted         let in as ``proxy:<user>`` (``trust_proxy_auth``)
no header, loopback and ``optional``      let in
no header otherwise                       401 ``UNAUTHORIZED`` (``WWW-Authenticate: Bearer``)
========================================  ================================================

The comparison is :func:`hmac.compare_digest`; the token never reaches a log line.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

import attrs

from .errors import ApiError, ErrorCode

TOKEN_ENV = "ORCHESTRA_TOKEN"
"""The environment variable the server (and the SDK and CLI) read the token from."""
OPEN_PATHS = frozenset({"/health"})
"""Paths answered without a token: liveness only, like llama-server's own ``/health``."""
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchestra"'}


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


@attrs.frozen
class Gate:
    """The per-request check of the table above. ``required``: a request without any
    credential is refused (false on a loopback bind with ``auth.optional``)."""

    token: str = attrs.field(repr=False)
    required: bool
    trust_proxy: bool = False
    proxy_header: str = "X-Forwarded-User"

    def admit(self, path: str, authorization: str | None, proxy_user: str | None) -> str:
        """Who the request is (``token``, ``proxy:<user>``, ``anonymous``), or raise
        :class:`ApiError` 401/403."""
        if path in OPEN_PATHS or not self.token:
            return "anonymous"
        if authorization is not None:
            scheme, _, given = authorization.strip().partition(" ")
            given = given.strip()
            if scheme.lower() != "bearer" or not given:
                raise ApiError(
                    ErrorCode.UNAUTHORIZED,
                    "malformed Authorization header: expected 'Bearer <token>'",
                    headers=_CHALLENGE,
                )
            if not hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), self.token.encode()
            ):
                raise ApiError(ErrorCode.FORBIDDEN, "wrong bearer token")
            return "token"
        if self.trust_proxy and proxy_user:
            return f"proxy:{proxy_user}"
        if not self.required:
            return "anonymous"
        raise ApiError(
            ErrorCode.UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers=_CHALLENGE,
        )
