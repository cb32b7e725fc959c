"""The ``[tools]`` tables (issue 19): the agents' HTTP fetch and search tools, the policy
they run behind, the secrets they must not leak, and the SearXNG instance search forwards to.

::

    [tools]                  enabled, audit_max_rows
    ├── [tools.policy]       what http_fetch may reach, and how much it may take
    ├── [tools.secrets]      what is redacted from logs, the audit and the answers
    └── [tools.search]       the SearXNG instance ``search`` forwards to

Like :mod:`orchestra.config.tables`, each field carries its default, its documentation and
its per-key check (``metadata={CHECK: ...}``); the tools (:mod:`orchestra.tools`) compile
these tables into their policy at start, normalising the domain patterns exactly as the
checks did (:func:`~orchestra.config.checks.domain_pattern`).
"""

from __future__ import annotations

import attrs

from orchestra.config.checks import (
    CHECK,
    between,
    content_type_patterns,
    domain_patterns,
    header_names,
    hook_ref,
    networks,
    ports,
    regexes,
    searxng_url,
    tool_methods,
    tool_schemes,
)

MIB = 1024 * 1024

DEFAULT_CONTENT_TYPES = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/xml",
    "application/*+xml",
    "application/javascript",
    "application/x-ndjson",
    "application/yaml",
    "application/toml",
)
"""What ``http_fetch`` reads by default: text, and the structured text formats."""

DEFAULT_SECRET_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key")
"""Request headers whose values are secrets by default."""


@attrs.frozen(kw_only=True)
class PolicyConfig:
    """``[tools.policy]``: what ``http_fetch`` may reach, and how much it may take.

    Every rule is checked before anything is sent, and again for every redirect; a call a
    rule refuses is answered 403 with ``policy_label`` ``tools.policy.<key>``.
    """

    allowed_domains: tuple[str, ...] = attrs.field(
        default=("*",), metadata={CHECK: domain_patterns}
    )
    """Hosts a URL may name: ``*`` (any), ``*.example.com`` (its subdomains, not
    ``example.com`` itself), ``example.com`` or an address; case, a trailing dot and
    Unicode (IDNA) do not matter. Empty: none."""
    denied_domains: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: domain_patterns})
    """Hosts refused even when ``allowed_domains`` has them (checked first), in the same
    forms."""
    schemes: tuple[str, ...] = attrs.field(
        default=("https", "http"), metadata={CHECK: tool_schemes}
    )
    """URL schemes that may be fetched: ``https``, ``http``."""
    methods: tuple[str, ...] = attrs.field(default=("GET", "HEAD"), metadata={CHECK: tool_methods})
    """Methods an agent may send: ``GET``, ``HEAD``."""
    ports: tuple[int, ...] = attrs.field(default=(80, 443), metadata={CHECK: ports})
    """Ports a URL may name (1..65535); a URL without one has its scheme's (80, 443)."""
    max_response_bytes: int = attrs.field(default=MIB, metadata={CHECK: between(1, 64 * MIB)})
    """Body bytes read at most (1 B .. 64 MiB, default 1 MiB); the rest is not read and the
    answer says ``truncated``. A call's ``max_bytes`` may only lower it."""
    max_time_ms: int = attrs.field(default=10_000, metadata={CHECK: between(1, 600_000)})
    """Milliseconds a whole call may take, resolution, redirects and body included
    (1..600000); past it the call fails with 504 ``TOOL_TIMEOUT``. A call's ``timeout_ms``
    may only lower it."""
    content_types: tuple[str, ...] = attrs.field(
        default=DEFAULT_CONTENT_TYPES, metadata={CHECK: content_type_patterns}
    )
    """Media types whose body is read (``text/*``, ``application/*+json``, ``*/*``); an
    answer of another type is refused before its body is read. An answer without a
    ``Content-Type`` matches ``*/*`` only."""
    allow_private: bool = False
    """Let URLs reach loopback, private, link-local, multicast, reserved and other not
    globally routable addresses (the cloud metadata addresses stay refused but through
    ``allowed_networks``). Checked on every address a name resolves to."""
    allowed_networks: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: networks})
    """Networks reachable although private (``192.168.1.20/32`` for a LAN wiki), in CIDR
    form."""
    max_redirects: int = attrs.field(default=5, metadata={CHECK: between(0, 20)})
    """Redirects followed at most (0..20); each is checked like the call itself."""
    hook: str = attrs.field(default="", metadata={CHECK: hook_ref})
    """A policy hook, ``"module:function"``, imported at start: it sees every call and may
    let it go on, rewrite it or refuse it (``orchestra.tools.hook``; ``specs/tools.md``).
    Empty: none."""


@attrs.frozen(kw_only=True)
class SecretsConfig:
    """``[tools.secrets]``: what never reaches a log line or the audit (and, with
    ``redact_output``, the answer)."""

    headers: tuple[str, ...] = attrs.field(
        default=DEFAULT_SECRET_HEADERS, metadata={CHECK: header_names}
    )
    """Request headers (any case) whose values are secrets: redacted wherever they occur,
    and the answer's headers of these names too. Not sent on to another host after a
    redirect."""
    patterns: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: regexes})
    """Regular expressions (Python's) whose matches are secrets, in the URL and the answer
    as much as in the logs (``"sk-[A-Za-z0-9]{20,}"``); none may match the empty string."""
    redact_output: bool = True
    """Redact the secrets in the answer too (body, headers, final URL, redirects), not only
    in the logs and the audit."""


@attrs.frozen(kw_only=True)
class SearchConfig:
    """``[tools.search]``: the SearXNG instance ``search`` forwards to. It is the
    operator's and trusted: the private-address rule does not apply to it."""

    searxng_url: str = attrs.field(default="", metadata={CHECK: searxng_url})
    """Its base URL (``http://192.168.1.30:8888``); ``search`` asks
    ``<searxng_url>/search?q=...&format=json`` (SearXNG's ``search.formats`` must list
    ``json``). Empty: no search (404)."""
    max_results: int = attrs.field(default=10, metadata={CHECK: between(1, 100)})
    """Results returned at most (1..100); a call's ``max_results`` may only lower it."""
    timeout_ms: int = attrs.field(default=10_000, metadata={CHECK: between(1, 600_000)})
    """Milliseconds a search may take (1..600000); past it, 504 ``TOOL_TIMEOUT``."""


@attrs.frozen(kw_only=True)
class ToolsConfig:
    """``[tools]``: the agents' tools, ``POST /v1/tools/http_fetch`` and
    ``POST /v1/tools/search``, and their audit (``GET /v1/tools/audit``)."""

    enabled: bool = True
    """Serve the tools; false: their routes answer 404."""
    audit_max_rows: int = attrs.field(default=100_000, metadata={CHECK: between(1, 100_000_000)})
    """Calls the audit (``<data_dir>/tools-audit.sqlite3``) keeps: the newest ones; older
    ones are deleted as new ones come."""
    policy: PolicyConfig = PolicyConfig()
    """``[tools.policy]``."""
    secrets: SecretsConfig = SecretsConfig()
    """``[tools.secrets]``."""
    search: SearchConfig = SearchConfig()
    """``[tools.search]``."""
