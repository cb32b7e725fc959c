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
- per-key checks (ranges, URL and address forms): ``metadata={CHECK: ...}`` on the attrs
  field, run by that field's structure hook right after its type check, so cattrs'
  detailed validation reports them with their path beside every other problem;
- cross-key checks: run on the raw document, each only when all the keys it reads are
  themselves valid, so they are reported even when some unrelated part of the file is
  wrong.

What is where (each module imports only those above it):

- :mod:`orchestra.config.checks`: the per-key checks, and the value rendering and
  ``host:port`` splitting they share;
- :mod:`orchestra.config.tables`: the table classes (:class:`Config` and its tables), with
  their defaults and the checks their fields name;
- :mod:`orchestra.config.tools_tables`: the ``[tools]`` tables (:class:`ToolsConfig` and
  its policy, secrets and search tables), which :class:`Config` holds;
- :mod:`orchestra.config.structure`: :data:`converter`, its strict hooks, and cattrs'
  errors turned into problem lines;
- :mod:`orchestra.config.parse`: the cross-key checks, the token in effect,
  :func:`parse_config` and :func:`load_config`.

This package re-exports the public names; import them from here.
"""

from __future__ import annotations

from orchestra.config.checks import MANAGED_FLAGS as MANAGED_FLAGS
from orchestra.config.checks import Check as Check
from orchestra.config.parse import load_config as load_config
from orchestra.config.parse import parse_config as parse_config
from orchestra.config.structure import converter as converter
from orchestra.config.tables import AdapterConfig as AdapterConfig
from orchestra.config.tables import AdmissionConfig as AdmissionConfig
from orchestra.config.tables import ArtifactsConfig as ArtifactsConfig
from orchestra.config.tables import AuthConfig as AuthConfig
from orchestra.config.tables import Config as Config
from orchestra.config.tables import LogConfig as LogConfig
from orchestra.config.tables import ModelConfig as ModelConfig
from orchestra.config.tables import PlacementConfig as PlacementConfig
from orchestra.config.tables import ReplicaConfig as ReplicaConfig
from orchestra.config.tables import SessionsConfig as SessionsConfig
from orchestra.config.tables import StreamsConfig as StreamsConfig
from orchestra.config.tables import TracingConfig as TracingConfig
from orchestra.config.tools_tables import PolicyConfig as PolicyConfig
from orchestra.config.tools_tables import SearchConfig as SearchConfig
from orchestra.config.tools_tables import SecretsConfig as SecretsConfig
from orchestra.config.tools_tables import ToolsConfig as ToolsConfig
from orchestra.errors import ConfigError as ConfigError

__all__ = [
    "AdapterConfig",
    "AdmissionConfig",
    "ArtifactsConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ModelConfig",
    "PlacementConfig",
    "PolicyConfig",
    "ReplicaConfig",
    "SearchConfig",
    "SecretsConfig",
    "StreamsConfig",
    "ToolsConfig",
    "TracingConfig",
    "converter",
    "load_config",
    "parse_config",
]
