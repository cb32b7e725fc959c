"""Who may use the API: the per-request gate on the bearer token (where the token comes
from is :mod:`orchestra.tokens`).

The token is ``auth.token``, else the contents of ``auth.token_file`` (a file only its
owner may read), else ``$ORCHESTRA_TOKEN``; :func:`orchestra.config.parse_config` resolves
it once, at start. Each request then meets :class:`Gate`:

========================================  ================================================
request                                   answer
========================================  ================================================
an open path (``/health``, SDK, page)     let in, always (liveness, public code: no secret)
no token configured (loopback only)       let in
``Authorization: Bearer <the token>``     let in
an ``Authorization`` header, malformed    401 ``UNAUTHORIZED``
``Authorization: Bearer <another>``       403 ``FORBIDDEN``
no header, proxy identity trusted         let in as ``proxy:<user>`` (``trust_proxy_auth``)
no header, loopback and ``optional``      let in
no header otherwise                       401 ``UNAUTHORIZED`` (``WWW-Authenticate: Bearer``)
========================================  ================================================

A browser's ``EventSource`` cannot send an ``Authorization`` header, so a task's stream
(``GET /v1/tasks/{id}/stream``, and only it: a read with no side effect) also takes the
token from the cookie :data:`STREAM_COOKIE` when no header is sent
(:func:`stream_credential`). The status page sets it ``SameSite=Strict``, so no other site's
page can send it.

The comparison is :func:`hmac.compare_digest`; the token never reaches a log line.
"""

from __future__ import annotations

import hmac
import re

import attrs

from orchestra.errors import ErrorCode, Refusal
from orchestra.http.static import PUBLIC_PATHS

OPEN_PATHS = frozenset({"/health"}) | PUBLIC_PATHS
"""Paths answered without a token: liveness only, like llama-server's own ``/health``, and
the files of :mod:`orchestra.http.static` (the JavaScript SDK and the status page: public
code, no secret in them; the page loads before it can ask for the token)."""


STREAM_COOKIE = "orchestra_token"
"""The cookie a task's stream takes the token from, for ``EventSource`` (no header)."""
_STREAM_PATH = re.compile(r"^/v1/tasks/[^/]+/stream$")


def stream_credential(
    method: str, path: str, authorization: str | None, cookie: str | None
) -> str | None:
    """The ``Authorization`` a request is judged by: its header, else, for ``GET`` of a
    task's stream, the token in :data:`STREAM_COOKIE` as a bearer token."""
    if authorization is not None or not cookie:
        return authorization
    if method == "GET" and _STREAM_PATH.match(path):
        return f"Bearer {cookie}"
    return None


@attrs.frozen
class Gate:
    """The per-request check of the table above. ``required``: a request without any
    credential is refused (false on a loopback bind with ``auth.optional``)."""

    token: str = attrs.field(repr=False)
    required: bool
    trust_proxy: bool = False
    proxy_header: str = "X-Forwarded-User"

    @property
    def need(self) -> str:
        """What ``GET /health`` says of the token (so the status page asks for it before
        a refused request): ``required``, ``optional`` (loopback, ``auth.optional``) or
        ``none`` (no token is configured)."""
        if not self.token:
            return "none"
        return "required" if self.required else "optional"

    def admit(self, path: str, authorization: str | None, proxy_user: str | None) -> str:
        """Who the request is (``token``, ``proxy:<user>``, ``anonymous``), or raise
        :class:`Refusal` 401/403."""
        if path in OPEN_PATHS or not self.token:
            return "anonymous"
        if authorization is not None:
            scheme, _, given = authorization.strip().partition(" ")
            given = given.strip()
            if scheme.lower() != "bearer" or not given:
                raise Refusal(
                    ErrorCode.UNAUTHORIZED,
                    "malformed Authorization header: expected 'Bearer <token>'",
                )
            if not hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), self.token.encode()
            ):
                raise Refusal(ErrorCode.FORBIDDEN, "wrong bearer token")
            return "token"
        if self.trust_proxy and proxy_user:
            return f"proxy:{proxy_user}"
        if not self.required:
            return "anonymous"
        raise Refusal(
            ErrorCode.UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
        )
