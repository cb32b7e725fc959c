"""Strict TOML configuration (DESIGN §3).

A configuration file is read with :mod:`tomllib` and structured into frozen attrs classes by
one module-level :data:`converter`. Nothing is coerced: ``"5"`` is not an integer and
``true`` is not ``1``. Unknown keys, wrong types, out-of-range values and impossible
combinations are all gathered into one :class:`ConfigError`, one line per problem, each
naming its key path in dotted form::

    admission.queue_capacity: must be between 1 and 10000 (got 0)
    auth.tokn: unknown key
    admission.ctx_limit: expected an integer (got "big")

How the checks are layered:

- type checks: strict structure hooks for ``int``, ``float``, ``bool``, ``str`` and
  ``tuple[str, ...]``, registered on :data:`converter`;
- per-key checks (ranges, URL and address forms): ``metadata={_CHECK: ...}`` on the attrs
  field, run by that field's structure hook right after its type check, so cattrs'
  detailed validation reports them with their path beside every other problem;
- cross-key checks (:func:`_cross_checks`): run on the raw document, each only when all
  the keys it reads are themselves valid, so they are reported even when some unrelated
  part of the file is wrong.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception

from orchestra.errors import ConfigError
from orchestra.tokens import TOKEN_ENV, env_token, read_token_file, token_problem

__all__ = [
    "AdapterConfig",
    "AdmissionConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ReplicaConfig",
    "StreamsConfig",
    "converter",
    "load_config",
    "parse_config",
]

T = TypeVar("T")

Check = Callable[[Any], str | None]
"""A per-key check: returns a problem (without the key path) or None when the value is fine."""

_CHECK: Final = "orchestra.config.check"
"""The attrs field metadata key holding a field's :data:`Check`."""


# -- per-key checks ------------------------------------------------------------------------


def _show(value: Any) -> str:
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


def _at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be at least {low} (got {_show(value)})"

    return check


def _between(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        ok = low <= value <= high
        return None if ok else f"must be between {low} and {high} (got {_show(value)})"

    return check


def _more_than_zero(value: Any) -> str | None:
    return None if value > 0 else f"must be more than 0 (got {_show(value)})"


def _non_empty(value: Any) -> str | None:
    return None if value else "must not be empty"


def _token_chars(value: Any) -> str | None:
    ok = all("!" <= c <= "~" for c in value)
    return None if ok else "must be printable ASCII without spaces"


def _log_format(value: Any) -> str | None:
    return None if value in ("json", "text") else f'must be "json" or "text" (got {_show(value)})'


def _log_level(value: Any) -> str | None:
    levels = ("debug", "info", "warning", "error")
    return None if value in levels else f"must be one of {', '.join(levels)} (got {_show(value)})"


def _engine(value: Any) -> str | None:
    return None if value == "llamacpp" else f'only "llamacpp" is supported (got {_show(value)})'


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _split_bind(addr: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises ValueError naming the expected form."""
    bad = ValueError(
        f"must be host:port, with [brackets] around an IPv6 address (got {_show(addr)})"
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


def _bind_addr(value: Any) -> str | None:
    try:
        _split_bind(value)
    except ValueError as exc:
        return str(exc)
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(value: Any) -> str | None:
    problem = f"must be a base URL like http://127.0.0.1:8081 (got {_show(value)})"
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


MANAGED_FLAGS: Final = frozenset(
    {
        "-m", "--model", "--host", "--port", "-c", "--ctx-size", "-np", "--parallel",
        "-t", "--threads", "-ngl", "--gpu-layers", "--n-gpu-layers", "--fit", "--api-key",
        "--slot-save-path",
    }
)  # fmt: skip
"""llama-server flags orchestra sets itself from ``[replica]`` and ``[adapter]``."""


def _not_managed(value: Any) -> str | None:
    clashes = [arg.split("=", 1)[0] for arg in value if arg.split("=", 1)[0] in MANAGED_FLAGS]
    if clashes:
        return (
            f"{clashes[0]} is set by orchestra from [replica] and adapter.endpoint; "
            f"use those keys instead"
        )
    return None


# -- the configuration classes ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AuthConfig:
    """``[auth]``: the bearer token and when it is required."""

    token: str = attrs.field(default="", metadata={_CHECK: _token_chars}, repr=False)
    """The bearer token clients send. After :func:`parse_config` it holds the token in
    effect: this key, else the contents of ``token_file``, else ``$ORCHESTRA_TOKEN``. One
    of them is required when ``bind_addr`` is not loopback."""
    token_file: str = ""
    """A file holding the token, readable by its owner only (``chmod 600``)."""
    optional: bool = True
    """On a loopback bind, requests may skip the token."""
    trust_proxy_auth: bool = False
    """Let in a request without a token that carries ``proxy_user_header`` (set by an
    authenticating reverse proxy in front of orchestra). Only when orchestra is reachable
    through that proxy alone."""
    proxy_user_header: str = attrs.field(default="X-Forwarded-User", metadata={_CHECK: _non_empty})
    """The header an authenticating proxy puts the user's name in."""


@attrs.frozen(kw_only=True)
class LogConfig:
    """``[log]``: what orchestra writes on stdout."""

    format: str = attrs.field(default="json", metadata={_CHECK: _log_format})
    """``json``: one JSON object per line (JSON Lines); ``text``: for a terminal."""
    level: str = attrs.field(default="info", metadata={_CHECK: _log_level})
    """``debug``, ``info``, ``warning`` or ``error``."""


@attrs.frozen(kw_only=True)
class AdmissionConfig:
    """``[admission]``: what a task may ask for and how many may wait."""

    queue_capacity: int = attrs.field(default=16, metadata={_CHECK: _between(1, 10_000)})
    """Tasks that may wait for an engine slot (1..10000); one more is refused with 429."""
    ctx_limit: int = attrs.field(default=2048, metadata={_CHECK: _at_least(16)})
    """Tokens: prompt + ``max_tokens`` of a task may not exceed this (at least 16)."""
    max_tokens_limit: int = attrs.field(default=1024, metadata={_CHECK: _at_least(1)})
    """Tokens: the largest ``max_tokens`` a task may ask for (1 .. ``ctx_limit`` - 1)."""
    batch_queue_capacity: int = attrs.field(default=16, metadata={_CHECK: _between(1, 10_000)})
    """Batch tasks that may wait (1..10000), a limit of their own: ``queue_capacity`` then
    bounds the interactive ones. One more is refused with 429 (``policy_label``
    ``batch_queue_capacity``)."""
    batch_every: int = attrs.field(default=4, metadata={_CHECK: _between(1, 1000)})
    """While batch tasks wait, at least one dispatch in every ``batch_every`` is a batch one
    (1 = batch first; 4 = up to three interactive tasks, then a batch one)."""


@attrs.frozen(kw_only=True)
class SessionsConfig:
    """``[sessions]``: conversations pinned to an engine slot, and what each may spend.

    A budget of 0 means no limit. Tokens are generated tokens (``tokens_out``); the cost of
    a session is its tokens times ``cost_per_token``.
    """

    ttl_s: float = attrs.field(default=1800.0, metadata={_CHECK: _more_than_zero})
    """Seconds a session without a task in progress lives after its last task ended."""
    max_turns: int = attrs.field(default=100, metadata={_CHECK: _between(1, 1_000_000)})
    """Tasks a session may submit (1..1000000); the next one gets 429 BUDGET_EXCEEDED."""
    max_sessions: int = attrs.field(default=1024, metadata={_CHECK: _between(1, 1_000_000)})
    """Sessions alive at once; a task opening one more gets 429 (``policy_label``
    ``max_sessions``)."""
    token_budget: int = attrs.field(default=0, metadata={_CHECK: _at_least(0)})
    """Tokens a session may generate in all (0 = no limit)."""
    wall_budget_s: float = attrs.field(default=0.0, metadata={_CHECK: _at_least(0)})
    """Seconds a session's tasks may run in all, from dispatch to end (0 = no limit)."""
    cost_per_token: float = attrs.field(default=0.0, metadata={_CHECK: _at_least(0)})
    """The cost of one generated token, in whatever unit you budget in."""
    cost_budget: float = attrs.field(default=0.0, metadata={_CHECK: _at_least(0)})
    """The cost a session may reach (0 = no limit; needs ``cost_per_token``)."""


@attrs.frozen(kw_only=True)
class StreamsConfig:
    """``[streams]``: how long events are kept and readers waited for."""

    retention_s: float = attrs.field(default=300.0, metadata={_CHECK: _at_least(0)})
    """Seconds a finished task's events are kept for late readers (at least 0)."""
    orphan_grace_ms: int = attrs.field(default=10_000, metadata={_CHECK: _at_least(0)})
    """Milliseconds a running task whose readers all left waits for one before it is
    cancelled (at least 0)."""


@attrs.frozen(kw_only=True)
class AdapterConfig:
    """``[adapter]``: the engine orchestra talks to."""

    engine: str = attrs.field(default="llamacpp", metadata={_CHECK: _engine})
    """The engine kind; only ``llamacpp``."""
    endpoint: str = attrs.field(default="http://127.0.0.1:8081", metadata={_CHECK: _endpoint})
    """Base URL of llama-server: ``http://`` or ``https://``, a host, an optional port and
    no path."""
    connect_timeout_s: float = attrs.field(default=5.0, metadata={_CHECK: _more_than_zero})
    """Seconds to connect to the engine (and for its short calls); more than 0."""
    decode_timeout_s: float = attrs.field(default=60.0, metadata={_CHECK: _more_than_zero})
    """Seconds the engine may stay silent mid-stream before the task fails; more than 0."""
    engine_backlog: int = attrs.field(default=1, metadata={_CHECK: _between(0, 16)})
    """Tasks sent to the engine beyond its slots, waiting in its own queue so a freed slot
    starts the next one at once (0..16; 0 = never more than the slots)."""


@attrs.frozen(kw_only=True)
class ReplicaConfig:
    """``[replica]``: present when orchestra owns the llama-server process."""

    binary: str = ""
    """The llama-server executable: a path, or a name looked up on PATH; empty means the
    build ``orchestra engine install`` cached (the CUDA one when ``gpu_layers`` > 0)."""
    model: str = ""
    """Path to the GGUF model; empty means the small model ``orchestra engine install``
    cached."""
    ctx_size: int = attrs.field(default=2048, metadata={_CHECK: _at_least(16)})
    """Tokens of context llama-server allocates, shared by its slots (``--ctx-size``)."""
    parallel: int = attrs.field(default=1, metadata={_CHECK: _between(1, 256)})
    """Decode slots, i.e. tasks the engine runs at once (``--parallel``, 1..256)."""
    threads: int = attrs.field(default=2, metadata={_CHECK: _at_least(1)})
    """CPU threads llama-server uses (``--threads``, at least 1)."""
    gpu_layers: int = attrs.field(default=0, metadata={_CHECK: _at_least(0)})
    """Model layers offloaded to the GPU (``--n-gpu-layers``); 0 = CPU only, 999 = all."""
    extra_args: tuple[str, ...] = attrs.field(default=(), metadata={_CHECK: _not_managed})
    """More llama-server command-line arguments, passed as they are (not the flags
    orchestra sets itself)."""
    start_timeout_s: float = attrs.field(default=300.0, metadata={_CHECK: _more_than_zero})
    """Seconds llama-server may take to load its model before it counts as hung."""
    stop_grace_s: float = attrs.field(default=10.0, metadata={_CHECK: _at_least(0)})
    """On stop, seconds between SIGTERM and SIGKILL."""
    crash_limit: int = attrs.field(default=5, metadata={_CHECK: _at_least(1)})
    """Crashes within ``crash_window_s`` after which the pool reports unavailable."""
    crash_window_s: float = attrs.field(default=300.0, metadata={_CHECK: _more_than_zero})
    """The window, in seconds, in which crashes are counted."""
    restart_backoff_max_s: float = attrs.field(default=30.0, metadata={_CHECK: _more_than_zero})
    """The longest wait before a restart; waits double from 0.25 s up to this."""


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration file."""

    bind_addr: str = attrs.field(default="127.0.0.1:8080", metadata={_CHECK: _bind_addr})
    """``host:port`` to listen on (``[::1]:8080`` for IPv6; port 0 = any free port)."""
    shutdown_grace_s: float = attrs.field(default=30.0, metadata={_CHECK: _at_least(0)})
    """On SIGTERM, seconds running tasks get to finish before they are cancelled."""
    data_dir: str = ""
    """Where orchestra keeps state that outlives it (the model catalog). Empty means
    ``$XDG_DATA_HOME/orchestra``, else ``~/.local/share/orchestra``; ``~`` is expanded."""
    auth: AuthConfig = AuthConfig()
    """``[auth]``."""
    log: LogConfig = LogConfig()
    """``[log]``."""
    admission: AdmissionConfig = AdmissionConfig()
    """``[admission]``."""
    streams: StreamsConfig = StreamsConfig()
    """``[streams]``."""
    sessions: SessionsConfig = SessionsConfig()
    """``[sessions]``."""
    adapter: AdapterConfig = AdapterConfig()
    """``[adapter]``."""
    replica: ReplicaConfig | None = None
    """``[replica]``: None in attached mode; a table here means orchestra owns the engine."""

    @property
    def bind_host(self) -> str:
        """The host part of ``bind_addr`` (IPv6 without brackets).

        Raises ValueError when ``bind_addr`` is malformed, which :func:`parse_config` never
        lets through.
        """
        return _split_bind(self.bind_addr)[0]

    @property
    def bind_port(self) -> int:
        """The port part of ``bind_addr``; 0 means any free port."""
        return _split_bind(self.bind_addr)[1]

    @property
    def data_path(self) -> Path:
        """``data_dir`` resolved: the directory orchestra's state lives in."""
        if self.data_dir:
            return Path(self.data_dir).expanduser().absolute()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "orchestra"

    @property
    def bind_is_loopback(self) -> bool:
        """True for ``localhost``, 127.0.0.0/8 and ::1."""
        return _is_loopback(self.bind_host)


# -- strict structuring ----------------------------------------------------------------------

converter: Final = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
"""Structures TOML documents into the classes above; strict about types and unknown keys."""


def _strict(kind: str, accept: Callable[[Any], bool], make: Callable[[Any], T]) -> Any:
    def hook(value: Any, _: Any) -> T:
        if not accept(value):
            raise TypeError(f"expected {kind} (got {_show(value)})")
        return make(value)

    return hook


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _structure_float(value: Any, _: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number (got {_show(value)})")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {_show(value)})")
    return float(value)


def _structure_str_tuple(value: Any, _: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an array of strings (got {_show(value)})")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"expected an array of strings (got {_show(item)} at index {index})")
    return tuple(value)


converter.register_structure_hook(int, _strict("an integer", _is_int, int))
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(
    bool, _strict("true or false", lambda v: v is True or v is False, bool)
)
converter.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str), str))
converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)


def _checked(base: Callable[[Any, Any], Any], check: Check) -> Callable[[Any, Any], Any]:
    """``base`` (the type's hook), then the field's own check on the value as written."""

    def hook(value: Any, type_: Any) -> Any:
        result = base(value, type_)
        problem = check(value)
        if problem is not None:
            raise ValueError(problem)
        return result

    return hook


def _field_hook(field: attrs.Attribute[Any]) -> Callable[[Any, Any], Any]:
    base = converter.get_structure_hook(field.type)
    check: Check | None = field.metadata.get(_CHECK)
    return base if check is None else _checked(base, check)


def _table_hook(cls: type[T]) -> Callable[[Any, Any], T]:
    """Structure an attrs class from a TOML table: strict keys, then each field's hook."""
    attrs_cls: Any = cls
    attrs.resolve_types(attrs_cls)
    overrides: dict[str, Any] = {
        field.name: override(struct_hook=_field_hook(field))
        for field in attrs.fields(attrs_cls)
        if _CHECK in field.metadata
    }
    inner = make_dict_structure_fn(cls, converter, **overrides)

    def hook(value: Any, _: Any) -> T:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table (got {_show(value)})")
        return inner(value, cls)

    return hook


converter.register_structure_hook_factory(attrs.has, _table_hook)


# -- messages ---------------------------------------------------------------------------------

_UNKNOWN_KEYS: Final = "\x00unknown keys:"
"""Marks :func:`_describe`'s rendering of extra keys, which :func:`_problems` expands."""


def _describe(exc: BaseException, type_: Any) -> str:
    """The ``format_exception`` for :func:`cattrs.transform_error`."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return _UNKNOWN_KEYS + json.dumps(sorted(str(key) for key in exc.extra_fields))
    if isinstance(exc, KeyError):
        return "required"
    if isinstance(exc, ValueError | TypeError) and exc.args:
        return str(exc)
    return format_exception(exc, type_)


def _key(name: str) -> str:
    """A key as TOML would write it inside a dotted path."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _dotted(path: str) -> str:
    """``$.admission.queue_capacity`` → ``admission.queue_capacity``."""
    return path.removeprefix("$").removeprefix(".")


def _problems(exc: BaseException) -> list[str]:
    """One line per problem from a cattrs structuring error."""
    lines: list[str] = []
    for line in cattrs.transform_error(exc, format_exception=_describe):
        description, _, path = line.rpartition(" @ ")
        where = _dotted(path)
        if description.startswith(_UNKNOWN_KEYS):
            keys: list[str] = json.loads(description.removeprefix(_UNKNOWN_KEYS))
            prefix = f"{where}." if where else ""
            lines += [f"{prefix}{_key(key)}: unknown key" for key in keys]
        else:
            lines.append(f"{where or 'config'}: {' '.join(description.splitlines())}")
    return lines


# -- cross-key checks -------------------------------------------------------------------------


class _Invalid:
    """What :func:`_salvage` returns for a value that does not structure."""


_INVALID: Final = _Invalid()


def _salvage(data: Mapping[str, Any], *path: str) -> Any:
    """The structured, per-key-checked value at ``path``, its default when absent, or
    :data:`_INVALID` when it (or a table on the way) is wrong."""
    cls: Any = Config
    table: Any = data
    for depth, name in enumerate(path):
        field = attrs.fields_dict(cls)[name]
        if not isinstance(table, Mapping):
            return _INVALID
        if name not in table:
            value = field.default
            for rest in path[depth + 1 :]:
                value = getattr(value, rest)
            return value
        if depth == len(path) - 1:
            try:
                return _field_hook(field)(table[name], field.type)
            except (ValueError, TypeError):
                return _INVALID
        cls, table = field.type, table[name]
    raise AssertionError("unreachable")  # pragma: no cover


def _effective_token(data: Mapping[str, Any], problems: list[str]) -> str | _Invalid:
    """The token in effect: ``auth.token``, else ``auth.token_file``'s, else the
    environment's; problems with any of them are added to ``problems``."""
    token, token_file = _salvage(data, "auth", "token"), _salvage(data, "auth", "token_file")
    if isinstance(token, _Invalid) or isinstance(token_file, _Invalid):
        return _INVALID
    if token and token_file:
        problems.append("auth.token_file: set either auth.token or auth.token_file, not both")
        return _INVALID
    if token_file:
        try:
            return read_token_file(token_file)
        except ValueError as exc:
            problems.append(f"auth.token_file: {exc}")
            return _INVALID
    if token:
        return str(token)
    from_env = env_token()
    problem = token_problem(from_env)
    if problem is not None:
        problems.append(f"${TOKEN_ENV}: {problem}")
        return _INVALID
    return from_env


def _cross_checks(data: Mapping[str, Any], problems: list[str]) -> str | _Invalid:
    """Checks across keys; returns the token in effect."""
    bind_addr = _salvage(data, "bind_addr")
    token = _effective_token(data, problems)
    usable = bind_addr is not _INVALID and token is not _INVALID
    if usable and not token and not _is_loopback(_split_bind(bind_addr)[0]):
        problems.append(
            f"auth.token: required when bind_addr ({bind_addr}) is not loopback (set "
            f"auth.token, auth.token_file or ${TOKEN_ENV})"
        )
    max_tokens = _salvage(data, "admission", "max_tokens_limit")
    ctx_limit = _salvage(data, "admission", "ctx_limit")
    if max_tokens is not _INVALID and ctx_limit is not _INVALID and max_tokens >= ctx_limit:
        problems.append(
            f"admission.max_tokens_limit: must be less than admission.ctx_limit "
            f"({max_tokens} >= {ctx_limit})"
        )
    cost_budget = _salvage(data, "sessions", "cost_budget")
    cost_per_token = _salvage(data, "sessions", "cost_per_token")
    if cost_budget not in (_INVALID, 0) and cost_per_token == 0:
        problems.append(
            "sessions.cost_budget: needs sessions.cost_per_token (a cost per generated token)"
        )
    endpoint = _salvage(data, "adapter", "endpoint")
    if "replica" in data and endpoint is not _INVALID:
        parts = urlsplit(endpoint)
        host_ok = re.fullmatch(r"127(\.[0-9]{1,3}){3}", parts.hostname or "") is not None
        if parts.scheme != "http" or not host_ok or parts.port is None:
            problems.append(
                f"adapter.endpoint: with [replica], orchestra starts llama-server on this "
                f"address, so it must be http://127.0.0.1:PORT with an explicit port "
                f"(got {_show(endpoint)})"
            )
    return token


# -- entry points -----------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any]) -> Config:
    """Structure and check an already parsed TOML document, and resolve the token in
    effect (reading ``auth.token_file`` or ``$ORCHESTRA_TOKEN``) into ``auth.token``.

    Returns the :class:`Config`, or raises :class:`ConfigError` listing every problem found.
    """
    problems: list[str] = []
    config: Config | None = None
    try:
        config = converter.structure(data, Config)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        problems += _problems(exc)
    token: str | _Invalid = _INVALID
    if isinstance(data, Mapping):
        token = _cross_checks(data, problems)
    if problems or config is None or isinstance(token, _Invalid):
        raise ConfigError(problems)
    return attrs.evolve(config, auth=attrs.evolve(config.auth, token=token))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and check a TOML configuration file.

    Returns the :class:`Config`, or raises :class:`ConfigError` when the file cannot be read,
    is not valid TOML (one problem, with tomllib's line and column), or does not pass
    :func:`parse_config`.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError([f"config: cannot read {name}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config: {name} is not UTF-8 ({exc.reason})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: {name} is not valid TOML: {exc}"]) from None
    return parse_config(data)
