"""Reading a configuration (DESIGN §3): cross-key checks, :func:`parse_config` and
:func:`load_config`.

:func:`parse_config` structures a parsed TOML document with
:data:`~orchestra.config.structure.converter` (type and per-key checks), then runs the
cross-key checks (:func:`_cross_checks`) on the raw document, each only when all the keys
it reads are themselves valid, so they are reported even when some unrelated part of the
file is wrong. Every problem found goes into one :class:`ConfigError`. It also resolves
the token in effect (``auth.token``, ``auth.token_file`` or ``$ORCHESTRA_TOKEN``).
:func:`load_config` reads and decodes the TOML file first.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import cattrs

from orchestra.config.checks import is_loopback, show, split_bind
from orchestra.config.structure import converter, field_hook, problem_lines
from orchestra.config.tables import Config, ModelConfig
from orchestra.errors import ConfigError
from orchestra.tokens import TOKEN_ENV, env_token, read_token_file, token_problem


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
            factory: Any = value
            if isinstance(factory, attrs.Factory):  # type: ignore[arg-type]
                value = factory.factory()
            for rest in path[depth + 1 :]:
                value = getattr(value, rest)
            return value
        if depth == len(path) - 1:
            try:
                return field_hook(field)(table[name], field.type)
            except (cattrs.BaseValidationError, ValueError, TypeError):
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
    if usable and not token and not is_loopback(split_bind(bind_addr)[0]):
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
    owned = "replica" in data or "models" in data
    if owned and endpoint is not _INVALID:
        parts = urlsplit(endpoint)
        host_ok = re.fullmatch(r"127(\.[0-9]{1,3}){3}", parts.hostname or "") is not None
        if parts.scheme != "http" or not host_ok or parts.port is None:
            problems.append(
                f"adapter.endpoint: with [replica] or [models], orchestra starts llama-server "
                f"on this address, so it must be http://127.0.0.1:PORT with an explicit port "
                f"(got {show(endpoint)})"
            )
    _model_checks(data, problems)
    return token


def _model_checks(data: Mapping[str, Any], problems: list[str]) -> None:
    """``[models]`` against ``[replica]``, ``default_model`` and ``[placement]``."""
    models = _salvage(data, "models")
    default = _salvage(data, "default_model")
    if models is _INVALID:
        return
    if models and "replica" in data:
        problems.append(
            "models: use either [replica] (one model) or [models.ID] tables (several), not both"
        )
    names: dict[str, str] = {name: name for name in models}
    for name, model in models.items():
        for alias in model.aliases:
            if alias in names:
                problems.append(
                    f"models.{name}.aliases: {show(alias)} already names model {show(names[alias])}"
                )
            names.setdefault(alias, name)
    if default not in (_INVALID, "") and default not in names:
        known = ", ".join(models) if models else "none: there is no [models] table"
        problems.append(
            f"default_model: {show(default)} is not the id or alias of a model in [models] "
            f"(known: {known})"
        )
    for name, model in models.items():
        _replica_checks(name, model, problems)
    budget = _salvage(data, "placement", "memory_budget_mb")
    if budget in (_INVALID, 0):
        return
    for name, model in models.items():
        if model.memory_mb > budget:
            problems.append(
                f"models.{name}.memory_mb: {model.memory_mb} MiB does not fit "
                f"placement.memory_budget_mb ({budget} MiB) even alone"
            )
    kept = sum(model.memory_mb for model in models.values() if model.keep_loaded)
    if kept > budget:
        problems.append(
            f"placement.memory_budget_mb: the keep_loaded models take {kept} MiB together, "
            f"more than the budget ({budget} MiB)"
        )


def _replica_checks(name: str, model: ModelConfig, problems: list[str]) -> None:
    """A model's replicas: at least one, devices one per owned replica, and OpenAI-compatible
    endpoints with their capacity."""
    table = f"models.{name}"
    owned = model.owned_replicas
    openai = model.openai_endpoints + (model.endpoints if model.engine == "openai" else ())
    if model.engine == "openai" and owned:
        problems.append(
            f'{table}.replicas: orchestra starts llama-server only; with engine = "openai" '
            f"list the servers in {table}.endpoints and set replicas = 0 (or leave it out)"
        )
    if not owned and not model.endpoints and not model.openai_endpoints:
        problems.append(f"{table}.replicas: 0 and no endpoints: the model has no replica to run on")
    if model.devices and len(model.devices) != owned:
        problems.append(
            f"{table}.devices: {len(model.devices)} entries for {owned} owned replica(s); give "
            f"one CUDA_VISIBLE_DEVICES value per replica (or none)"
        )
    if model.rpc_servers and owned > 1:
        problems.append(
            f"{table}.rpc_servers: an rpc-server serves one llama-server at a time, so a "
            f"model split over rpc-servers has one owned replica (replicas = 1)"
        )
    if openai and not model.slots:
        problems.append(
            f"{table}.slots: required with OpenAI-compatible endpoints: how many tasks each "
            f"runs at once (such servers do not say)"
        )


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
        problems += problem_lines(exc)
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
