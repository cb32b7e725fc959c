"""Who may use the API: the per-request gate on the bearer token (where the token comes
from is :mod:`orchestra.tokens`).

The token is ``auth.token``, else the contents of ``auth.token_file`` (a file only its
owner may read), else ``$ORCHESTRA_TOKEN``; :func:`orchestra.config.parse_config` resolves
it once, at start. Each request then meets :class:`Gate`:

========================================  ================================================
request                                   answer
========================================  ================================================
an open path (``GET /health``, the SDK)   let in, always (liveness, public code: no secret)
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

import attrs

from orchestra.errors import ErrorCode, Refusal

OPEN_PATHS = frozenset({"/health", "/sdk/orchestra.js", "/sdk/orchestra.d.ts"})
"""Paths answered without a token: liveness only, like llama-server's own ``/health``, and
the JavaScript SDK's two files (public code, no secret in them: a page loads the module
before it can ask for the token; ``orchestra.http.static``)."""


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
