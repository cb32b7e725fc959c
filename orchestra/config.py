"""Strict TOML configuration (DESIGN §3).

Unknown keys, wrong types, out-of-range values and impossible combinations are all
gathered into one :class:`ConfigError`, one line per problem, each naming its key path::

    admission.queue_capacity: must be at least 1 (got 0)
    auth.tokn: unknown key
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class AuthConfig:
    """``[auth]``: the bearer token and when it is required."""

    token: str = ""
    """Required when ``bind_addr`` is not loopback."""
    optional: bool = True
    """On a loopback bind, requests may skip the token."""
    trust_proxy_auth: bool = False
    """Trust an upstream proxy's identity header (a later feature)."""


@attrs.frozen(kw_only=True)
class AdmissionConfig:
    """``[admission]``: what a task may ask for and how many may wait."""

    queue_capacity: int = 16
    """Tasks that may wait for an engine slot; one more is refused with 429."""
    ctx_limit: int = 2048
    """Prompt tokens + ``max_tokens`` may not exceed this."""
    max_tokens_limit: int = 1024
    """The largest ``max_tokens`` a task may ask for."""


@attrs.frozen(kw_only=True)
class StreamsConfig:
    """``[streams]``: how long events are kept and readers waited for."""

    retention_s: float = 300.0
    """Seconds a finished task's events are kept for late readers."""
    orphan_grace_ms: int = 10_000
    """A running task whose readers all left is cancelled after this long without one."""


@attrs.frozen(kw_only=True)
class AdapterConfig:
    """``[adapter]``: the engine orchestra talks to."""

    engine: str = "llamacpp"
    """The engine kind; only ``llamacpp``."""
    endpoint: str = "http://127.0.0.1:8081"
    """Base URL of llama-server."""
    connect_timeout_s: float = 5.0
    """Seconds to connect to the engine (and for its short calls)."""
    decode_timeout_s: float = 60.0
    """Seconds the engine may stay silent mid-stream before the task fails."""


@attrs.frozen(kw_only=True)
class ReplicaConfig:
    """``[replica]``: present when orchestra owns the llama-server process."""

    binary: str = "llama-server"
    model: str = ""
    ctx_size: int = 2048
    parallel: int = 1
    threads: int = 2
    gpu_layers: int = 0
    extra_args: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration file."""

    bind_addr: str = "127.0.0.1:8080"
    """``host:port`` to listen on (``[::1]:8080`` for IPv6; port 0 = any free port)."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, seconds running tasks get to finish before they are cancelled."""
    auth: AuthConfig = AuthConfig()
    admission: AdmissionConfig = AdmissionConfig()
    streams: StreamsConfig = StreamsConfig()
    adapter: AdapterConfig = AdapterConfig()
    replica: ReplicaConfig | None = None

    @property
    def bind_host(self) -> str:
        """The host part of ``bind_addr`` (IPv6 without brackets)."""
        return _split_bind(self.bind_addr)[0]

    @property
    def bind_port(self) -> int:
        """The port part of ``bind_addr``."""
        return _split_bind(self.bind_addr)[1]

    @property
    def bind_is_loopback(self) -> bool:
        """True for ``localhost``, 127.0.0.0/8 and ::1."""
        return _is_loopback(self.bind_host)


class ConfigError(Exception):
    """Raised when a configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def _split_bind(addr: str) -> tuple[str, int]:
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
    else:
        host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port, with [brackets] around IPv6 (got {addr!r})")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- strict structuring ------------------------------------------------------------------

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _strict(kind: str, check: Callable[[Any], bool], make: Callable[[Any], T]) -> Any:
    def hook(value: Any, _: Any) -> T:
        if not check(value):
            raise TypeError(f"expected {kind} (got {_describe(value)})")
        return make(value)

    return hook


converter.register_structure_hook(
    int, _strict("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool), int)
)
converter.register_structure_hook(
    float,
    _strict(
        "a number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        float,
    ),
)
converter.register_structure_hook(
    bool, _strict("true or false", lambda v: isinstance(v, bool), bool)
)
converter.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str), str))
converter.register_structure_hook_func(
    lambda t: t == tuple[str, ...],
    _strict(
        "a list of strings",
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        tuple,
    ),
)


def _tables(cls: type[T]) -> Callable[[Any, Any], T]:
    """Structure an attrs class from a TOML table, refusing anything that is not a table."""
    attrs.resolve_types(cls)  # type: ignore[type-var]
    inner = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)

    def hook(value: Any, _: Any) -> T:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table (got {_describe(value)})")
        return inner(value, cls)

    return hook


converter.register_structure_hook_factory(attrs.has, _tables)


def _flatten(exc: BaseException, path: str) -> list[str]:
    """Turn cattrs' nested validation errors into ``dotted.path: message`` lines."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return [f"{_join(path, key)}: unknown key" for key in sorted(exc.extra_fields)]
    if isinstance(exc, ClassValidationError | IterableValidationError):
        lines: list[str] = []
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if hasattr(n, "name")), None)
            name = getattr(note, "name", None)
            lines.extend(_flatten(sub, _join(path, str(name)) if name is not None else path))
        return lines
    if isinstance(exc, KeyError):
        return [f"{path}: required"]
    return [f"{path or 'config'}: {exc}"]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- checks on values that structured ------------------------------------------------------


def _at_least(path: str, value: float, low: float) -> list[str]:
    return [] if value >= low else [f"{path}: must be at least {low} (got {value})"]


def _between(path: str, value: int, low: int, high: int) -> list[str]:
    ok = low <= value <= high
    return [] if ok else [f"{path}: must be between {low} and {high} (got {value})"]


def _check(config: Config) -> list[str]:
    problems: list[str] = []
    a, s, ad = config.admission, config.streams, config.adapter
    problems += _between("admission.queue_capacity", a.queue_capacity, 1, 10_000)
    problems += _at_least("admission.ctx_limit", a.ctx_limit, 16)
    problems += _at_least("admission.max_tokens_limit", a.max_tokens_limit, 1)
    if a.max_tokens_limit >= a.ctx_limit:
        problems.append(
            f"admission.max_tokens_limit: must be less than admission.ctx_limit "
            f"({a.max_tokens_limit} >= {a.ctx_limit})"
        )
    problems += _at_least("streams.retention_s", s.retention_s, 0)
    problems += _at_least("streams.orphan_grace_ms", s.orphan_grace_ms, 0)
    problems += _at_least("shutdown_grace_s", config.shutdown_grace_s, 0)
    if ad.engine != "llamacpp":
        problems.append(f'adapter.engine: only "llamacpp" is supported (got "{ad.engine}")')
    problems += _check_endpoint(ad.endpoint)
    for name in ("connect_timeout_s", "decode_timeout_s"):
        value = getattr(ad, name)
        if value <= 0:
            problems.append(f"adapter.{name}: must be more than 0 (got {value})")
    if config.replica is not None:
        r = config.replica
        problems += _at_least("replica.ctx_size", r.ctx_size, 16)
        problems += _between("replica.parallel", r.parallel, 1, 256)
        problems += _at_least("replica.threads", r.threads, 1)
        problems += _at_least("replica.gpu_layers", r.gpu_layers, 0)
    try:
        _split_bind(config.bind_addr)
    except ValueError as exc:
        problems.append(f"bind_addr: {exc}")
    else:
        if not config.bind_is_loopback and not config.auth.token:
            problems.append(
                f"auth.token: required when bind_addr ({config.bind_addr}) is not loopback"
            )
    return problems


def _check_endpoint(endpoint: str) -> list[str]:
    parts = urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return [f"adapter.endpoint: bad port in {endpoint!r}"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"adapter.endpoint: must be an http:// or https:// URL (got {endpoint!r})"]
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return [f"adapter.endpoint: must be a base URL without a path (got {endpoint!r})"]
    return []


# -- entry points --------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any]) -> Config:
    """Structure and check an already parsed TOML document."""
    try:
        config = converter.structure(data, Config)
    except (ClassValidationError, ForbiddenExtraKeysError, TypeError) as exc:
        raise ConfigError(_flatten(exc, "")) from None
    problems = _check(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and check a TOML configuration file."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError([f"config: cannot read {os.fspath(path)}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: {os.fspath(path)} is not valid TOML: {exc}"]) from None
    return parse_config(data)
