"""The tools' policy (``[tools.policy]``), compiled, and its decisions: pure, no I/O.

:class:`Policy` is the configuration table made ready to match (domain patterns
normalised, networks parsed). The decisions, each raising a
:class:`~orchestra.errors.Refusal` (``FORBIDDEN``, ``policy_label`` ``tools.policy.<rule>``,
a message naming the rule and the offending value) or returning:

=================================  ==========================================================
:func:`parse_url`                  a URL as the policy reads it (:class:`Target`); ValueError
                                   when it is not an absolute URL with a host
:func:`check_request`              scheme, method, denied then allowed domains, port, headers
:func:`check_addresses`            every address the host resolved to: private, metadata,
                                   ``allowed_networks``
:func:`check_content_type`         the answer's media type, before its body is read
=================================  ==========================================================

The fetcher (:mod:`orchestra.tools.fetch`) calls them in that order for the call and again
for every redirect.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

import attrs

from orchestra.config import PolicyConfig
from orchestra.config.checks import domain_pattern, normal_host, show
from orchestra.errors import ErrorCode, Refusal
from orchestra.tools.addresses import IPAddress, Network, classify, in_networks, is_metadata

LABEL_PREFIX: Final = "tools.policy."
"""Every refusal of the policy carries ``policy_label`` ``tools.policy.<rule>``."""

DEFAULT_PORTS: Final = {"http": 80, "https": 443}

MANAGED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
"""Request headers orchestra sets itself: an agent that sends one is refused
(``tools.policy.headers``). ``Host`` above all: the connection goes to the address the
policy checked, and ``Host`` says which site of it is meant."""


def label(rule: str) -> str:
    """The ``policy_label`` of a refusal by ``rule``."""
    return LABEL_PREFIX + rule


def refuse(rule: str, message: str) -> Refusal:
    """A refusal by the policy's ``rule``."""
    return Refusal(ErrorCode.FORBIDDEN, message, policy_label=label(rule))


@attrs.frozen(kw_only=True)
class Policy:
    """``[tools.policy]`` ready to match: see :class:`orchestra.config.PolicyConfig` for
    what each field means."""

    allowed_domains: tuple[str, ...] = ("*",)
    """Normal patterns (:func:`orchestra.config.checks.domain_pattern`)."""
    denied_domains: tuple[str, ...] = ()
    schemes: frozenset[str] = frozenset({"http", "https"})
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    ports: frozenset[int] = frozenset({80, 443})
    max_response_bytes: int = 1024 * 1024
    max_time_ms: int = 10_000
    content_types: tuple[str, ...] = ("*/*",)
    """Lower-case media ranges."""
    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = ()
    max_redirects: int = 5

    @classmethod
    def from_config(cls, config: PolicyConfig) -> Policy:
        """Compile a checked table (it cannot fail on one :func:`parse_config` let
        through)."""
        return cls(
            allowed_domains=tuple(domain_pattern(p) for p in config.allowed_domains),
            denied_domains=tuple(domain_pattern(p) for p in config.denied_domains),
            schemes=frozenset(config.schemes),
            methods=frozenset(config.methods),
            ports=frozenset(config.ports),
            max_response_bytes=config.max_response_bytes,
            max_time_ms=config.max_time_ms,
            content_types=tuple(p.lower() for p in config.content_types),
            allow_private=config.allow_private,
            allowed_networks=tuple(ipaddress.ip_network(n) for n in config.allowed_networks),
            max_redirects=config.max_redirects,
        )


@attrs.frozen
class Target:
    """A URL as the policy reads it, normalised."""

    url: str
    """The whole URL again: ASCII host, no default port, no fragment."""
    scheme: str
    """Lower case."""
    host: str
    """:func:`~orchestra.config.checks.normal_host`: an address, or an ASCII domain name."""
    port: int
    """The URL's port, or its scheme's (0 for a scheme without one)."""
    target: str
    """Path and query, as sent on the request line (``/`` at least)."""

    @property
    def address(self) -> IPAddress | None:
        """The host when it is an IP address."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def authority(self) -> str:
        """``host[:port]`` as a ``Host`` header (and a URL) writes it."""
        return _authority(self.scheme, self.host, self.port)


def parse_url(url: str) -> Target:
    """``url`` as the policy reads it. Raises ValueError (the problem, for a person) when it
    is not an absolute URL with a host: relative, no host, credentials in it, a port out of
    range, spaces or control characters, a host that is neither a domain name nor an
    address. A scheme other than http(s) parses; :func:`check_request` refuses it."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("must not hold spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise ValueError("must be an absolute URL, like https://example.com/page")
    if "@" in parts.netloc:
        raise ValueError(
            "must not hold credentials (user:password@): send them in a header, which is "
            "kept secret"
        )
    raw_host = parts.netloc.rpartition(":")[0] if port is not None else parts.netloc
    if parts.netloc.endswith(":"):
        raw_host = parts.netloc[:-1]
    if not raw_host:
        raise ValueError("has no host")
    if port == 0:
        raise ValueError("has port 0")
    host = normal_host(raw_host)
    effective = port if port is not None else DEFAULT_PORTS.get(scheme, 0)
    path = parts.path or "/"
    if not path.startswith("/"):
        raise ValueError("must be an absolute URL, like https://example.com/page")
    target = path + (f"?{parts.query}" if parts.query else "")
    authority = _authority(scheme, host, effective)
    return Target(f"{scheme}://{authority}{target}", scheme, host, effective, target)


def _authority(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port and port != DEFAULT_PORTS.get(scheme) else shown


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def domain_matches(pattern: str, host: str) -> bool:
    """Whether the normal ``pattern`` (``*``, ``*.domain`` or a host) matches the normal
    ``host``: ``*`` matches every host, ``*.example.com`` the names below
    ``example.com`` (not itself, and no address), a host itself only."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and not _is_address(host)
    return host == pattern


def _listed(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def check_request(policy: Policy, method: str, target: Target, header_names: Iterable[str]) -> None:
    """Refuse (raise :class:`Refusal`) a request the policy does not allow, by the first
    rule it breaks: ``schemes``, ``methods``, ``denied_domains``, ``allowed_domains``,
    ``ports``, then ``headers`` (one orchestra sets itself: :data:`MANAGED_HEADERS`)."""
    if target.scheme not in policy.schemes:
        raise refuse(
            "schemes",
            f"scheme {show(target.scheme)} is not in tools.policy.schemes "
            f"({_listed(sorted(policy.schemes))})",
        )
    if method not in policy.methods:
        raise refuse(
            "methods",
            f"method {method} is not in tools.policy.methods ({_listed(sorted(policy.methods))})",
        )
    denied = next((p for p in policy.denied_domains if domain_matches(p, target.host)), None)
    if denied is not None:
        raise refuse(
            "denied_domains",
            f"host {target.host} is denied by tools.policy.denied_domains ({denied})",
        )
    if not any(domain_matches(p, target.host) for p in policy.allowed_domains):
        raise refuse(
            "allowed_domains",
            f"host {target.host} is not in tools.policy.allowed_domains "
            f"({_listed(policy.allowed_domains)})",
        )
    if target.port not in policy.ports:
        raise refuse(
            "ports",
            f"port {target.port} is not in tools.policy.ports ({_listed(sorted(policy.ports))})",
        )
    for name in header_names:
        if name.lower() in MANAGED_HEADERS:
            raise refuse(
                "headers",
                f"header {name} is one orchestra sets itself (tools.policy.headers: the "
                f"connection goes to the address the policy checked); leave it out",
            )


def check_addresses(policy: Policy, target: Target, addresses: Sequence[IPAddress]) -> None:
    """Refuse (``tools.policy.allow_private``) unless every address of ``addresses`` (those
    ``target.host`` resolved to, or the address it is) may be reached: an address in
    ``allowed_networks`` may; a cloud metadata address may not, even with
    ``allow_private``; any other address may when it is public or ``allow_private`` is
    set."""
    for address in addresses:
        if in_networks(address, policy.allowed_networks):
            continue
        named = target.host if target.host == str(address) else f"{target.host} ({address})"
        if is_metadata(address):
            raise refuse(
                "allow_private",
                f"{named} is a cloud metadata address, refused even with "
                f"tools.policy.allow_private (tools.policy.allowed_networks can let it through)",
            )
        if policy.allow_private:
            continue
        reason = classify(address)
        if reason is not None:
            raise refuse(
                "allow_private",
                f"{named} is {reason}, and tools.policy.allow_private is false "
                f"(tools.policy.allowed_networks lets chosen networks through)",
            )


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` value, in lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def content_type_allowed(policy: Policy, content_type: str | None) -> bool:
    """Whether an answer of ``content_type`` may be read: its media type matches a range of
    ``content_types`` (``*`` standing for any run of characters); no type at all matches
    ``*/*`` only."""
    media = media_type(content_type)
    if not media:
        return "*/*" in policy.content_types
    return any(fnmatch.fnmatchcase(media, pattern) for pattern in policy.content_types)


def check_content_type(policy: Policy, content_type: str | None) -> None:
    """Refuse (``tools.policy.content_types``) an answer whose type may not be read."""
    if not content_type_allowed(policy, content_type):
        shown = media_type(content_type) or "of no declared type"
        raise refuse(
            "content_types",
            f"the answer is {shown}, not in tools.policy.content_types "
            f"({_listed(policy.content_types)}); its body was not read",
        )
