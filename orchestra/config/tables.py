"""The configuration's tables (DESIGN §3): one frozen attrs class per TOML table.

:class:`Config` is the whole file; the other classes are its ``[auth]``, ``[log]``,
``[admission]``, ``[sessions]``, ``[streams]``, ``[adapter]``, ``[replica]``, ``[models.ID]``,
``[placement]``, ``[artifacts]`` and ``[tracing]`` tables.
Each field carries its default, its documentation and, in ``metadata={CHECK: ...}``, the
per-key check from :mod:`orchestra.config.checks` that
:mod:`orchestra.config.structure` runs after the field's type check. The classes only
describe; :func:`orchestra.config.parse.parse_config` builds them.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from orchestra.config.checks import (
    CHECK,
    at_least,
    base_url,
    between,
    endpoint_urls,
    engine_kind,
    host_port,
    host_ports,
    is_loopback,
    llamacpp_only,
    log_format,
    log_level,
    model_ids,
    more_than_zero,
    non_empty,
    not_managed,
    openai_urls,
    otlp_endpoint,
    split_bind,
    token_chars,
)
from orchestra.config.tools_tables import ToolsConfig


@attrs.frozen(kw_only=True)
class AuthConfig:
    """``[auth]``: the bearer token and when it is required."""

    token: str = attrs.field(default="", metadata={CHECK: token_chars}, repr=False)
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
    proxy_user_header: str = attrs.field(default="X-Forwarded-User", metadata={CHECK: non_empty})
    """The header an authenticating proxy puts the user's name in."""


@attrs.frozen(kw_only=True)
class LogConfig:
    """``[log]``: what orchestra writes on stdout."""

    format: str = attrs.field(default="json", metadata={CHECK: log_format})
    """``json``: one JSON object per line (JSON Lines); ``text``: for a terminal."""
    level: str = attrs.field(default="info", metadata={CHECK: log_level})
    """``debug``, ``info``, ``warning`` or ``error``."""


@attrs.frozen(kw_only=True)
class AdmissionConfig:
    """``[admission]``: what a task may ask for and how many may wait."""

    queue_capacity: int = attrs.field(default=16, metadata={CHECK: between(1, 10_000)})
    """Tasks that may wait for an engine slot (1..10000); one more is refused with 429."""
    ctx_limit: int = attrs.field(default=2048, metadata={CHECK: at_least(16)})
    """Tokens: prompt + ``max_tokens`` of a task may not exceed this (at least 16)."""
    max_tokens_limit: int = attrs.field(default=1024, metadata={CHECK: at_least(1)})
    """Tokens: the largest ``max_tokens`` a task may ask for (1 .. ``ctx_limit`` - 1)."""
    batch_queue_capacity: int = attrs.field(default=16, metadata={CHECK: between(1, 10_000)})
    """Batch tasks that may wait (1..10000), a limit of their own: ``queue_capacity`` then
    bounds the interactive ones. One more is refused with 429 (``policy_label``
    ``batch_queue_capacity``)."""
    batch_every: int = attrs.field(default=4, metadata={CHECK: between(1, 1000)})
    """While batch tasks wait, at least one dispatch in every ``batch_every`` is a batch one
    (1 = batch first; 4 = up to three interactive tasks, then a batch one)."""


@attrs.frozen(kw_only=True)
class SessionsConfig:
    """``[sessions]``: conversations pinned to an engine slot, and what each may spend.

    A budget of 0 means no limit. Tokens are generated tokens (``tokens_out``); the cost of
    a session is its tokens times ``cost_per_token``.
    """

    ttl_s: float = attrs.field(default=1800.0, metadata={CHECK: more_than_zero})
    """Seconds a session without a task in progress lives after its last task ended."""
    max_turns: int = attrs.field(default=100, metadata={CHECK: between(1, 1_000_000)})
    """Tasks a session may submit (1..1000000); the next one gets 429 BUDGET_EXCEEDED."""
    max_sessions: int = attrs.field(default=1024, metadata={CHECK: between(1, 1_000_000)})
    """Sessions alive at once; a task opening one more gets 429 (``policy_label``
    ``max_sessions``)."""
    token_budget: int = attrs.field(default=0, metadata={CHECK: at_least(0)})
    """Tokens a session may generate in all (0 = no limit)."""
    wall_budget_s: float = attrs.field(default=0.0, metadata={CHECK: at_least(0)})
    """Seconds a session's tasks may run in all, from dispatch to end (0 = no limit)."""
    cost_per_token: float = attrs.field(default=0.0, metadata={CHECK: at_least(0)})
    """The cost of one generated token, in whatever unit you budget in."""
    cost_budget: float = attrs.field(default=0.0, metadata={CHECK: at_least(0)})
    """The cost a session may reach (0 = no limit; needs ``cost_per_token``)."""


@attrs.frozen(kw_only=True)
class StreamsConfig:
    """``[streams]``: how long events are kept and readers waited for."""

    retention_s: float = attrs.field(default=300.0, metadata={CHECK: at_least(0)})
    """Seconds a finished task's events are kept for late readers (at least 0)."""
    orphan_grace_ms: int = attrs.field(default=10_000, metadata={CHECK: at_least(0)})
    """Milliseconds a running task whose readers all left waits for one before it is
    cancelled (at least 0)."""


@attrs.frozen(kw_only=True)
class AdapterConfig:
    """``[adapter]``: the engine orchestra talks to."""

    engine: str = attrs.field(default="llamacpp", metadata={CHECK: llamacpp_only})
    """The engine kind; only ``llamacpp``."""
    endpoint: str = attrs.field(default="http://127.0.0.1:8081", metadata={CHECK: base_url})
    """Base URL of llama-server: ``http://`` or ``https://``, a host, an optional port and
    no path."""
    connect_timeout_s: float = attrs.field(default=5.0, metadata={CHECK: more_than_zero})
    """Seconds to connect to the engine (and for its short calls); more than 0."""
    decode_timeout_s: float = attrs.field(default=60.0, metadata={CHECK: more_than_zero})
    """Seconds the engine may stay silent mid-stream before the task fails; more than 0."""
    engine_backlog: int = attrs.field(default=1, metadata={CHECK: between(0, 16)})
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
    ctx_size: int = attrs.field(default=2048, metadata={CHECK: at_least(16)})
    """Tokens of context llama-server allocates, shared by its slots (``--ctx-size``)."""
    parallel: int = attrs.field(default=1, metadata={CHECK: between(1, 256)})
    """Decode slots, i.e. tasks the engine runs at once (``--parallel``, 1..256)."""
    threads: int = attrs.field(default=2, metadata={CHECK: at_least(1)})
    """CPU threads llama-server uses (``--threads``, at least 1)."""
    gpu_layers: int = attrs.field(default=0, metadata={CHECK: at_least(0)})
    """Model layers offloaded to the GPU (``--n-gpu-layers``); 0 = CPU only, 999 = all."""
    extra_args: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: not_managed})
    """More llama-server command-line arguments, passed as they are (not the flags
    orchestra sets itself)."""
    start_timeout_s: float = attrs.field(default=300.0, metadata={CHECK: more_than_zero})
    """Seconds llama-server may take to load its model before it counts as hung."""
    stop_grace_s: float = attrs.field(default=10.0, metadata={CHECK: at_least(0)})
    """On stop, seconds between SIGTERM and SIGKILL."""
    crash_limit: int = attrs.field(default=5, metadata={CHECK: at_least(1)})
    """Crashes within ``crash_window_s`` after which the pool reports unavailable."""
    crash_window_s: float = attrs.field(default=300.0, metadata={CHECK: more_than_zero})
    """The window, in seconds, in which crashes are counted."""
    restart_backoff_max_s: float = attrs.field(default=30.0, metadata={CHECK: more_than_zero})
    """The longest wait before a restart; waits double from 0.25 s up to this."""
    rpc_servers: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: host_ports})
    """llama.cpp ``rpc-server`` processes (``host:port``) that hold part of the model, for
    a model too big for one box (``--rpc``; needs ``orchestra engine install --rpc``)."""


@attrs.frozen(kw_only=True)
class ModelConfig:
    """``[models.ID]``: one model orchestra owns a pool for, loaded on demand (DESIGN §5).

    The engine keys are those of ``[replica]`` (``path`` is its ``model``)."""

    path: str = ""
    """Path to the GGUF model; empty means the small model ``orchestra engine install``
    cached."""
    aliases: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: model_ids})
    """Other names a request may use for this model (``model`` / ``model_ref``)."""
    keep_loaded: bool = False
    """Load at start and never unload or evict it (a manual unload still may)."""
    idle_unload_s: float = attrs.field(default=300.0, metadata={CHECK: at_least(0)})
    """Seconds after its last task ended that an idle pool is unloaded (0 = never)."""
    memory_mb: int = attrs.field(default=0, metadata={CHECK: at_least(0)})
    """What the loaded model takes, in MiB; 0 = estimated from the file size and context,
    then corrected from what the process really uses once loaded."""
    embeddings: bool = False
    """Serve ``POST /v1/embeddings`` (llama-server's ``--embeddings``)."""
    replicas: int | None = attrs.field(default=None, metadata={CHECK: between(0, 64)})
    """llama-server processes orchestra owns for this model (0..64), each on its own port;
    unset: 1 when no ``endpoints`` are given, else 0. On the CPU ``threads`` is split
    between them; with ``devices`` each gets its own GPUs."""
    devices: tuple[str, ...] = ()
    """One ``CUDA_VISIBLE_DEVICES`` value per owned replica (``["0", "1"]``: one GPU each);
    empty: every replica sees every GPU."""
    endpoints: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: endpoint_urls})
    """llama-servers someone else runs, on this box or the LAN (``http://host:port``),
    served as replicas of this model; orchestra never starts or stops them."""
    openai_endpoints: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: openai_urls})
    """Servers that speak the OpenAI API (vLLM, SGLang, TGI, Ollama, another orchestra),
    served as replicas of this model; their capacity is ``slots``."""
    engine: str = attrs.field(default="llamacpp", metadata={CHECK: engine_kind})
    """``llamacpp``, or ``openai``: then ``endpoints`` speak the OpenAI API too."""
    slots: int = attrs.field(default=0, metadata={CHECK: between(0, 4096)})
    """Tasks each OpenAI-compatible endpoint runs at once (such servers do not say)."""
    served_model: str = ""
    """The model name an OpenAI-compatible endpoint knows this model by (its ``model``
    field); empty: the model's id."""
    api_key_file: str = ""
    """A file (``chmod 600``) holding the API key the attached endpoints demand."""
    binary: str = ""
    """As ``replica.binary``."""
    ctx_size: int = attrs.field(default=2048, metadata={CHECK: at_least(16)})
    """As ``replica.ctx_size``."""
    parallel: int = attrs.field(default=1, metadata={CHECK: between(1, 256)})
    """As ``replica.parallel``."""
    threads: int = attrs.field(default=2, metadata={CHECK: at_least(1)})
    """As ``replica.threads``."""
    gpu_layers: int = attrs.field(default=0, metadata={CHECK: at_least(0)})
    """As ``replica.gpu_layers``."""
    extra_args: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: not_managed})
    """As ``replica.extra_args``."""
    start_timeout_s: float = attrs.field(default=300.0, metadata={CHECK: more_than_zero})
    """Seconds a load may take; longer fails the load (``MODEL_LOAD_FAILED``)."""
    stop_grace_s: float = attrs.field(default=10.0, metadata={CHECK: at_least(0)})
    """As ``replica.stop_grace_s``."""
    crash_limit: int = attrs.field(default=5, metadata={CHECK: at_least(1)})
    """As ``replica.crash_limit``."""
    crash_window_s: float = attrs.field(default=300.0, metadata={CHECK: more_than_zero})
    """As ``replica.crash_window_s``."""
    restart_backoff_max_s: float = attrs.field(default=30.0, metadata={CHECK: more_than_zero})
    """As ``replica.restart_backoff_max_s``."""
    rpc_servers: tuple[str, ...] = attrs.field(default=(), metadata={CHECK: host_ports})
    """As ``replica.rpc_servers``: each owned replica uses these rpc-servers."""

    _NOT_ENGINE_KEYS = (
        "path", "aliases", "keep_loaded", "idle_unload_s", "memory_mb", "embeddings",
        "replicas", "devices", "endpoints", "openai_endpoints", "engine", "slots",
        "served_model", "api_key_file",
    )  # fmt: skip

    @property
    def owned_replicas(self) -> int:
        """How many llama-servers orchestra starts for this model."""
        if self.replicas is not None:
            return self.replicas
        return 0 if self.endpoints or self.openai_endpoints else 1

    def replica(self) -> ReplicaConfig:
        """The engine keys of one owned replica as a ``[replica]`` table (what starts its
        llama-server): ``threads`` split between the owned replicas."""
        keys = attrs.asdict(self, recurse=False)
        for name in self._NOT_ENGINE_KEYS:
            del keys[name]
        keys["threads"] = max(1, self.threads // max(1, self.owned_replicas))
        return ReplicaConfig(model=self.path, **keys)


@attrs.frozen(kw_only=True)
class PlacementConfig:
    """``[placement]``: how much memory the loaded models may take together."""

    memory_budget_mb: int = attrs.field(default=0, metadata={CHECK: at_least(0)})
    """MiB the loaded models may take in all; 0 = the machine's: its RAM, or with
    ``gpu_layers`` the GPU's memory."""


@attrs.frozen(kw_only=True)
class ArtifactsConfig:
    """``[artifacts]``: how much the artifact registry (in ``data_dir``) may keep."""

    max_artifact_bytes: int = attrs.field(default=4 * 1024 * 1024, metadata={CHECK: at_least(1)})
    """Bytes one artifact may hold (default 4 MiB); a bigger one is refused with 413. The
    request body limit (8 MiB) grows to fit one this large sent as base64."""
    max_total_bytes: int = attrs.field(default=1024**3, metadata={CHECK: at_least(1)})
    """Bytes all artifacts may hold together (default 1 GiB); a put past it is refused
    with 507, and nothing is evicted behind anyone's back."""


@attrs.frozen(kw_only=True)
class TracingConfig:
    """``[tracing]``: OpenTelemetry traces, one per task (``specs/observability.md``); off
    by default."""

    enabled: bool = False
    """Trace every task; setting ``otlp_endpoint`` turns it on too."""
    otlp_endpoint: str = attrs.field(default="", metadata={CHECK: otlp_endpoint})
    """Where spans go, with OTLP over HTTP (protobuf): a collector's base URL
    (``http://127.0.0.1:4318``; ``/v1/traces`` is added) or its full traces URL. Empty with
    ``enabled``: the exporter's default (``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else
    ``http://localhost:4318/v1/traces``)."""
    service_name: str = attrs.field(default="orchestra", metadata={CHECK: non_empty})
    """The ``service.name`` of every span."""
    sample_ratio: float = attrs.field(default=1.0, metadata={CHECK: between(0, 1)})
    """The share of new traces kept (0..1); a task continuing a client's ``traceparent``
    follows that trace's sampling decision."""

    @property
    def on(self) -> bool:
        """Tasks are traced."""
        return self.enabled or bool(self.otlp_endpoint)


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration file."""

    bind_addr: str = attrs.field(default="127.0.0.1:8080", metadata={CHECK: host_port})
    """``host:port`` to listen on (``[::1]:8080`` for IPv6; port 0 = any free port)."""
    shutdown_grace_s: float = attrs.field(default=30.0, metadata={CHECK: at_least(0)})
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
    models: dict[str, ModelConfig] = attrs.field(factory=dict, metadata={CHECK: model_ids})
    """``[models.ID]``: several models, each with a pool of its own, loaded on demand
    (instead of ``[replica]``)."""
    default_model: str = ""
    """The model a request that names none goes to (an id or alias of ``[models]``); empty
    means the first one."""
    placement: PlacementConfig = PlacementConfig()
    """``[placement]``."""
    artifacts: ArtifactsConfig = ArtifactsConfig()
    """``[artifacts]``."""
    tracing: TracingConfig = TracingConfig()
    """``[tracing]``."""
    tools: ToolsConfig = attrs.field(factory=ToolsConfig)
    """``[tools]``, ``[tools.policy]``, ``[tools.secrets]``, ``[tools.search]``: the agents'
    HTTP fetch and search tools (:mod:`orchestra.config.tools_tables`)."""

    @property
    def bind_host(self) -> str:
        """The host part of ``bind_addr`` (IPv6 without brackets).

        Raises ValueError when ``bind_addr`` is malformed, which :func:`parse_config` never
        lets through.
        """
        return split_bind(self.bind_addr)[0]

    @property
    def bind_port(self) -> int:
        """The port part of ``bind_addr``; 0 means any free port."""
        return split_bind(self.bind_addr)[1]

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
        return is_loopback(self.bind_host)
