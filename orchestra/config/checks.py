"""Per-key checks of configuration values (DESIGN §3).

Each check takes a value that already has the right type and returns a problem (without
the key path) or None when the value is fine. :mod:`orchestra.config.tables` names them in
``metadata={CHECK: ...}`` on its attrs fields; :mod:`orchestra.config.structure` runs them
right after a field's type check. :func:`show` renders a value for any message, and
:func:`split_bind` and :func:`is_loopback` are shared with the tables' properties and the
cross-key checks; :func:`normal_host`, :func:`domain_pattern` and :func:`import_ref` with
the tools (:mod:`orchestra.tools`), which must read ``[tools]`` exactly as it was checked.
"""

from __future__ import annotations

import datetime
import importlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import idna

Check = Callable[[Any], str | None]
"""A per-key check: returns a problem (without the key path) or None when the value is fine."""

CHECK: Final = "orchestra.config.check"
"""The attrs field metadata key holding a field's :data:`Check`."""


def show(value: Any) -> str:
    """A short, single-line rendering of a TOML value for a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return f"a {type(value).__name__}"


def at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be at least {low} (got {show(value)})"

    return check


def between(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        ok = low <= value <= high
        return None if ok else f"must be between {low} and {high} (got {show(value)})"

    return check


def more_than_zero(value: Any) -> str | None:
    return None if value > 0 else f"must be more than 0 (got {show(value)})"


def non_empty(value: Any) -> str | None:
    return None if value else "must not be empty"


def token_chars(value: Any) -> str | None:
    ok = all("!" <= c <= "~" for c in value)
    return None if ok else "must be printable ASCII without spaces"


def log_format(value: Any) -> str | None:
    return None if value in ("json", "text") else f'must be "json" or "text" (got {show(value)})'


def log_level(value: Any) -> str | None:
    levels = ("debug", "info", "warning", "error")
    return None if value in levels else f"must be one of {', '.join(levels)} (got {show(value)})"


def llamacpp_only(value: Any) -> str | None:
    return None if value == "llamacpp" else f'only "llamacpp" is supported (got {show(value)})'


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def split_bind(addr: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises ValueError naming the expected form."""
    bad = ValueError(
        f"must be host:port, with [brackets] around an IPv6 address (got {show(addr)})"
    )
    match = re.fullmatch(r"\[([^\]]*)\]:([0-9]{1,5})|([^:\[\]]*):([0-9]{1,5})", addr)
    if match is None:
        raise bad
    if match[1] is not None:
        host, port = match[1], int(match[2])
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
    else:
        host, port = match[3], int(match[4])
        if not _HOSTNAME.fullmatch(host):
            raise bad
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise bad from None
    if port > 65535:
        raise ValueError(f"port must be between 0 and 65535 (got {port})")
    return host, port


def host_port(value: Any) -> str | None:
    try:
        split_bind(value)
    except ValueError as exc:
        return str(exc)
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(value: Any) -> str | None:
    problem = f"must be a base URL like http://127.0.0.1:8081 (got {show(value)})"
    if any(c.isspace() or not c.isprintable() for c in value):
        return problem
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return problem
    if parts.username is not None or parts.password is not None or parts.netloc.endswith(":"):
        return problem
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in value:
        return problem
    try:
        port = parts.port
    except ValueError:
        return problem
    if port == 0:
        return problem
    return None


def endpoint_urls(value: Any) -> str | None:
    """Attached engines: base URLs (``http(s)://host:port``); one on this machine may be
    written ``host:port`` (loopback only: an engine elsewhere needs its scheme)."""
    for index, url in enumerate(value):
        if "://" in url:
            problem = base_url(url)
            if problem is not None:
                return f"[{index}] {problem}"
            continue
        try:
            host, _ = split_bind(url)
        except ValueError:
            return f"[{index}] must be a base URL like http://192.168.1.20:8081 (got {show(url)})"
        if not is_loopback(host):
            return (
                f"[{index}] {show(url)} is not on this machine, so it needs its scheme: "
                f"http://{url} or https://{url}"
            )
    return None


def openai_urls(value: Any) -> str | None:
    """As :func:`endpoint_urls`, and a trailing ``/v1`` (as OpenAI clients write the base
    URL) is allowed."""
    return endpoint_urls([url.removesuffix("/").removesuffix("/v1") for url in value])


def host_ports(value: Any) -> str | None:
    """``host:port`` entries (``rpc_servers``)."""
    return _each(value, host_port)


def engine_kind(value: Any) -> str | None:
    if value in ("llamacpp", "openai"):
        return None
    return f'must be "llamacpp" or "openai" (got {show(value)})'


MANAGED_FLAGS: Final = frozenset(
    {
        "-m", "--model", "--host", "--port", "-c", "--ctx-size", "-np", "--parallel",
        "-t", "--threads", "-ngl", "--gpu-layers", "--n-gpu-layers", "--fit", "--api-key",
        "--slot-save-path", "--jinja", "--no-jinja", "--rpc",
    }
)  # fmt: skip
"""llama-server flags orchestra sets itself: from ``[replica]`` and ``[adapter]``, and
``--jinja``, which the OpenAI face needs."""


def not_managed(value: Any) -> str | None:
    clashes = [arg.split("=", 1)[0] for arg in value if arg.split("=", 1)[0] in MANAGED_FLAGS]
    if clashes and clashes[0] in ("--jinja", "--no-jinja"):
        return (
            f"{clashes[0]}: orchestra always starts llama-server with --jinja (chats are "
            f"rendered with the model's own template)"
        )
    if clashes:
        return (
            f"{clashes[0]} is set by orchestra from [replica] and adapter.endpoint; "
            f"use those keys instead"
        )
    return None


_MODEL_ID = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._:-]{1,128}")


def model_ids(value: Any) -> str | None:
    """Model ids and aliases (the keys of ``[models]``, or an ``aliases`` array): what a
    URL path segment can carry, 1..128 of ``A-Z a-z 0-9 . _ : -``."""
    for name in value:
        if not _MODEL_ID.fullmatch(name):
            return (
                f"{show(name)} is not a model id: use 1 to 128 letters, digits, '.', '_', "
                f"':' or '-'"
            )
    return None


# -- [tools] ----------------------------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def normal_host(host: str) -> str:
    """A URL's host, or the name in a domain pattern, as the tools' policy compares them: an
    IP address in its compressed form (IPv6 without brackets), else the domain name in ASCII
    (IDNA 2008 with the UTS 46 mapping, so in lower case) without its trailing dot.

    Raises ValueError saying what is wrong with it."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(f"{show(host)} is not an IPv6 address") from None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name:
        raise ValueError("the host is empty")
    if name.isascii():
        name = name.lower()
    else:
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"{show(host)} is not a valid domain name ({exc})") from None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"{show(host)} is not a valid domain name (labels of 1 to 63 letters, digits, "
            f"'-' or '_', separated by dots)"
        )
    return name


def domain_pattern(pattern: str) -> str:
    """A pattern of ``tools.policy.allowed_domains`` / ``denied_domains`` in the form the
    policy matches: ``*`` (every host), ``*.`` + a normal domain name (its subdomains only),
    or one normal host (:func:`normal_host`). Raises ValueError saying what is wrong."""
    if pattern == "*":
        return "*"
    if pattern.startswith("*."):
        rest = normal_host(pattern[2:])
        if "*" in rest or _is_address(rest):
            raise ValueError(f"{show(pattern)}: a wildcard goes before a domain name")
        return "*." + rest
    if "*" in pattern:
        raise ValueError(
            f"{show(pattern)}: a wildcard is only * (every host) or *.domain (its subdomains)"
        )
    return normal_host(pattern)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _each(value: Any, problem: Callable[[str], str | None]) -> str | None:
    """The first problem of an array's items, prefixed with its index."""
    for index, item in enumerate(value):
        found = problem(item)
        if found is not None:
            return f"[{index}] {found}"
    return None


def _domain_problem(item: str) -> str | None:
    try:
        domain_pattern(item)
    except ValueError as exc:
        return str(exc)
    return None


def domain_patterns(value: Any) -> str | None:
    """``tools.policy.allowed_domains`` / ``denied_domains``: each ``*``, ``*.domain`` or a
    host (a domain name, in any case and with or without its trailing dot, or an address)."""
    return _each(value, _domain_problem)


TOOL_SCHEMES: Final = ("http", "https")
"""The URL schemes ``http_fetch`` can fetch at all."""
TOOL_METHODS: Final = ("GET", "HEAD")
"""The methods ``http_fetch`` can send at all."""


def tool_schemes(value: Any) -> str | None:
    return _each(
        value,
        lambda s: None if s in TOOL_SCHEMES else f'only "http" and "https" (got {show(s)})',
    )


def tool_methods(value: Any) -> str | None:
    return _each(
        value, lambda m: None if m in TOOL_METHODS else f'only "GET" and "HEAD" (got {show(m)})'
    )


def ports(value: Any) -> str | None:
    for index, port in enumerate(value):
        if not 1 <= port <= 65535:
            return f"[{index}] must be between 1 and 65535 (got {show(port)})"
    return None


_MEDIA_RANGE = re.compile(r"(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)/(\*|[a-z0-9!#$&^_.+*-]+)")


def content_type_patterns(value: Any) -> str | None:
    """Media types, each part ``*`` or a name that may hold ``*`` (``text/*``,
    ``application/*+json``, ``*/*``), in any case."""
    for index, pattern in enumerate(value):
        if not _MEDIA_RANGE.fullmatch(pattern.lower()):
            return (
                f"[{index}] must be a media type like text/html, text/* or application/*+json "
                f"(got {show(pattern)})"
            )
    return None


def _network_problem(item: str) -> str | None:
    try:
        ipaddress.ip_network(item, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"must be a network like 192.168.1.0/24 or fd00::/8 (got {show(item)})"
        return f"{show(item)} has host bits set: did you mean {loose}?"
    return None


def networks(value: Any) -> str | None:
    """CIDR networks (``tools.policy.allowed_networks``)."""
    return _each(value, _network_problem)


def _regex_problem(item: str) -> str | None:
    try:
        compiled = re.compile(item)
    except re.error as exc:
        return f"{show(item)} is not a valid regular expression: {exc}"
    if compiled.fullmatch(""):
        return f"{show(item)} matches the empty string (it would redact everywhere)"
    return None


def regexes(value: Any) -> str | None:
    """Python regular expressions (``tools.secrets.patterns``), none matching ``""``."""
    return _each(value, _regex_problem)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")


def header_names(value: Any) -> str | None:
    return _each(
        value,
        lambda n: None if _TOKEN.fullmatch(n) else f"{show(n)} is not an HTTP header name",
    )


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_ref(ref: str) -> Any:
    """The callable ``module:function`` names (``tools.policy.hook``), imported now.

    Raises ValueError saying why it cannot be had: a malformed name, a module that does not
    import (with its error), a missing attribute, or one that is not callable."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attribute):
        raise ValueError(f'must be "module:function", like "mylab.policy:check" (got {show(ref)})')
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module raises while it is imported
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name} has no {attribute}") from None
    if not callable(target):
        raise ValueError(f"{ref} is not callable")
    return target


def hook_ref(value: Any) -> str | None:
    """``tools.policy.hook``: empty, or a callable that imports (so a bad hook stops the
    start with this key named)."""
    if not value:
        return None
    try:
        import_ref(value)
    except ValueError as exc:
        return str(exc)
    return None


def searxng_url(value: Any) -> str | None:
    """``tools.search.searxng_url``: empty, or an ``http(s)://host[:port][/path]`` URL."""
    if not value:
        return None
    problem = f"must be empty or a URL like http://192.168.1.30:8888 (got {show(value)})"
    if any(c.isspace() or not c.isprintable() for c in value):
        return problem
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return problem
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return problem
    if "?" in value or "#" in value:
        return problem
    try:
        port = parts.port
    except ValueError:
        return problem
    return problem if port == 0 else None


def otlp_endpoint(value: Any) -> str | None:
    """``tracing.otlp_endpoint``: empty, or an ``http(s)://host[:port][/path]`` URL with
    no credentials, query or fragment (it is logged)."""
    if not value:
        return None
    problem = (
        "must be empty or a URL like http://127.0.0.1:4318 or "
        f"http://127.0.0.1:4318/v1/traces (got {show(value)})"
    )
    if any(c.isspace() or not c.isprintable() for c in value) or "?" in value or "#" in value:
        return problem
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return problem
    if parts.username is not None or parts.password is not None:
        return problem
    try:
        port = parts.port
    except ValueError:
        return problem
    return problem if port == 0 else None
