"""The SDK's typed view of the wire contract's requests and answers.

Every class is ``attrs.frozen``; :data:`~orchestra.sdk._convert.converter` (the SDK's one
cattrs converter) turns them into and out of the JSON of ``specs/openapi/*.yaml``. The
stream's events are in :mod:`orchestra.sdk._events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from orchestra.errors import ErrorCode
from orchestra.sdk._artifacts import keep_artifact
from orchestra.task import Determinism, KeepArtifact, Priority, TaskState

# -- requests ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TaskRequest:
    """A task to submit (``POST /v1/tasks``). Only ``prompt`` is required; a field left
    None is not sent, and the server's default applies."""

    prompt: str
    max_tokens: int | None = None
    """Tokens to generate at most (server default: ``min(256, max_tokens_limit)``)."""
    task_id: str | None = None
    """Makes the submission idempotent: the same id and body return the same task."""
    session_id: str | None = None
    """Makes the task the next turn of this session (opened by its first task): pinned to
    one engine slot, one turn at a time, within the session's turn cap and budgets."""
    seed: int | None = None
    """With ``determinism="strict"`` (the default), the same seed gives the same bytes."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    stop: tuple[str, ...] | None = None
    priority: Priority | None = None
    deadline_ms: int | None = None
    determinism: Determinism | None = None
    model_ref: str | None = None
    engine: str | None = None
    ctx: int | None = None
    workload: str | None = None
    sampler_profile_version: str | None = None
    kv_hint: str | None = None
    metrics: bool | None = None
    """``True``: the stream also carries :class:`Metrics` events (progress figures)."""
    artifact: KeepArtifact | None = attrs.field(default=None, converter=keep_artifact)
    """Keep the generated text as an artifact when the task completes: a
    :class:`~orchestra.task.KeepArtifact`, a kind alone (``"summary"``), or ``{"kind":
    ..., "tags": [...]}``. Its id is then in the ``End`` event (``artifact_id``, or
    ``artifact_error`` when it could not be kept) and in :class:`TaskStatus`."""


# -- answers -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TaskHandle:
    """An admitted task (the 202 answer to a submission)."""

    task_id: str
    queue_position: int
    """Tasks ahead of it when it was admitted (0: it runs next)."""
    predicted_start_ms: int
    """Predicted wait before it starts."""
    stream_url: str


@attrs.frozen(kw_only=True)
class TaskStatus:
    """A snapshot of a task (``GET /v1/tasks/{id}``)."""

    task_id: str
    state: TaskState
    queue_position: int | None
    """Tasks ahead of it now, while queued; else None."""
    predicted_start_ms: int | None
    """Expected wait from now, while queued; else None."""
    tokens_out: int
    attempts: int
    error_code: ErrorCode | None
    queue_wait_ms: int | None
    run_ms: int | None
    artifact_id: str | None = None
    """The artifact its text was kept as, once it completed (a task with ``artifact``)."""
    artifact_error: str | None = None
    """Why its text could not be kept as the artifact it asked for."""


@attrs.frozen(kw_only=True)
class CancelResult:
    """The answer to a cancel: ``cancelled``, or the final state of a task already over."""

    task_id: str
    state: TaskState


@attrs.frozen(kw_only=True)
class EngineInfo:
    """The engine behind the server (an entry of ``Capabilities.engines``)."""

    engine: str
    engine_version: str | None
    mode: str
    """``owned`` (orchestra runs llama-server) or ``attached``."""


@attrs.frozen(kw_only=True)
class ServedModel:
    """The model being served (an entry of ``Capabilities.models``)."""

    id: str | None
    digest: str | None
    ctx_max: int | None
    pool: str | None = None
    """The pool that serves it (None from an older server)."""
    residency: str | None = None
    """``loaded``, ``loading``, ``unloading`` or ``unloaded`` (None from an older server)."""


@attrs.frozen(kw_only=True)
class PoolInfo:
    """A pool of engine slots (an entry of ``Capabilities.pools``)."""

    id: str
    ready: bool
    state: str
    slots_total: int
    slots_busy: int
    queue_depth: int


@attrs.frozen(kw_only=True)
class SessionLimits:
    """What a session may do and spend (``Limits.sessions``); a budget of 0 is no limit."""

    ttl_s: float
    """Seconds a session without a task in progress lives after its last task ended."""
    max_turns: int
    """Tasks a session may submit; the next one is refused (:class:`BudgetExceeded`)."""
    max_sessions: int
    """Sessions alive at once; a task opening one more gets :class:`QueueFull`."""
    token_budget: int
    """Tokens a session may generate in all."""
    wall_budget_s: float
    """Seconds a session's tasks may run in all, from dispatch to end."""
    cost_per_token: float
    cost_budget: float
    """The cost (generated tokens times ``cost_per_token``) a session may reach."""


@attrs.frozen(kw_only=True)
class Limits:
    """What one task may ask for, and how many may wait."""

    queue_capacity: int
    """Interactive tasks that may wait."""
    max_tokens: int
    ctx_limit: int
    batch_queue_capacity: int | None = None
    """Batch tasks that may wait (None from a server without priorities)."""
    sessions: SessionLimits | None = None
    """The sessions' turn cap, TTL and budgets (None from a server without sessions)."""
    engine_backlog: int | None = None
    """Tasks dispatched to each ready replica beyond its slots, into the engine's own queue
    (None from an older server): with ``slots_total`` and ``queue_capacity``, how many
    tasks the box takes at once."""


@attrs.frozen(kw_only=True)
class Capabilities:
    """What the box can do (``GET /v1/capabilities``)."""

    api_version: str
    orchestra_version: str
    engines: tuple[EngineInfo, ...]
    models: tuple[ServedModel, ...]
    pools: tuple[PoolInfo, ...]
    limits: Limits
    features: Mapping[str, Any]
    """Feature flags by name (``stream_resume``, ``drain``, ``reload``, ...)."""


@attrs.frozen(kw_only=True)
class Health:
    """One pool's health (``GET /v1/pools/{id}/health``)."""

    pool_id: str
    live: bool
    ready: bool
    """Ready and not draining: a submission would be admitted, room permitting."""
    draining: bool
    state: str
    """``ready``, ``starting``, ``unavailable`` or ``draining``."""
    engine: str
    engine_version: str | None
    model_id: str | None
    model_digest: str | None
    slots_total: int
    slots_busy: int
    queue_depth: int
    queue_capacity: int
    api_version: str
    last_error: str | None = None
    residency: str | None = None
    """Whether its model is in memory (None from an older server)."""


@attrs.frozen(kw_only=True)
class BudgetLeft:
    """What a session may still spend; None where there is no such limit."""

    tokens: int | None
    """Tokens it may still generate (its token budget, or what its cost budget pays for)."""
    cost: float | None
    wall_ms: int | None
    """Run time its tasks may still take."""


@attrs.frozen(kw_only=True)
class SessionStatus:
    """A snapshot of a session (``GET /v1/sessions/{id}``)."""

    session_id: str
    slot: int
    """The engine slot its turns are pinned to."""
    turns: int
    replica: str = ""
    """The replica of the pool whose engine holds that slot (``<model>/<index>``)."""
    """Tasks admitted in it."""
    max_turns: int
    tokens_in: int
    """Prompt tokens the engine evaluated (those reused from its cache not counted)."""
    tokens_out: int
    """Tokens generated over all its turns: what the token and cost budgets count."""
    cached_tokens: int
    """Prompt tokens reused from the slot's cache, over all turns."""
    wall_ms: int
    """How long its tasks ran, dispatch to end: what the wall-time budget counts."""
    cost: float
    budget_left: BudgetLeft
    ttl_left_ms: int | None
    """Until it expires if no task comes; None while a task is in progress."""
    kv_warm: bool
    """Its slot should still hold its conversation (nothing else completed there since)."""
    task_id: str | None
    """Its task in progress, if any."""


@attrs.frozen(kw_only=True)
class DeletedSession(SessionStatus):
    """The answer to ``DELETE /v1/sessions/{id}``: the session as it was when deleted."""

    deleted: bool
    kv_erased: bool
    """Whether the engine erased the session's slot cache."""


@attrs.frozen(kw_only=True)
class CatalogModel:
    """A model of the catalog (an entry of ``GET /v1/models``'s ``data``): OpenAI's fields
    (``id``, ``object``, ``created``, ``owned_by``), then orchestra's: the catalog entry,
    and whether (and how) it is loaded now."""

    id: str
    object: str
    """Always ``model`` (OpenAI's object type)."""
    created: int
    """When it was registered in the catalog, Unix seconds (``registered_at``)."""
    owned_by: str
    """Always ``orchestra``."""
    # the catalog entry: None for a model served but not in the catalog
    path: str | None = None
    sha256: str | None = None
    digest: str | None = None
    trust_state: str | None = None
    """``verified``, ``mismatch`` or ``unverified``."""
    state: str | None = None
    """``active`` or ``retired``."""
    size_bytes: int | None = None
    registered_at: str | None = None
    verified_at: str | None = None
    loaded: bool
    """True while it is loaded (an engine serves it now)."""
    context: int | None
    """While loaded: the tokens a task may span (prompt plus ``max_tokens``), the smaller of
    the server's ``ctx_limit`` and the engine's per-slot context; None when not loaded."""
    # a server serving several models adds these; an older one does not (the defaults)
    aliases: tuple[str, ...] = ()
    """Other names a request may use for it (``model`` / ``model_ref``)."""
    residency: str | None = None
    """``loaded``, ``loading``, ``unloaded``, ``unloading`` or ``failed``; None from an older
    server (then :attr:`loaded` says). Not :attr:`state`, which is the catalog's."""
    error: str | None = None
    """Why its last load failed (``residency`` ``failed``)."""
    memory_mb: int | None = None
    """What it takes (or would take) when loaded, in MiB; None when not known."""
    memory_source: str | None = None
    """Where :attr:`memory_mb` comes from: ``configured``, ``estimated`` or ``measured``."""
    last_used: str | None = None
    """When a task on it last ended (RFC 3339); None if none has."""
    idle_s: float | None = None
    """While loaded with nothing to do: seconds since its last task ended; else None."""
    idle_unload_s: float | None = None
    """Seconds idle after which the server unloads it (0: never); None when not said."""
    pool: str | None = None
    """The pool that serves it (its llama-server), when it has one."""
    default: bool = False
    """True for the model a request that names none goes to."""
    keep_loaded: bool = False
    """Kept loaded: never unloaded when idle nor evicted for another model."""
    embeddings: bool = False
    """Serves ``POST /v1/embeddings``."""
    running: int = 0
    """Its tasks running now."""
    waiting: int = 0
    """Its tasks waiting in the queue."""
    load_ms: int | None = None
    """How long its last load took; None if it was never measured."""


@attrs.frozen(kw_only=True)
class UnloadedModel(CatalogModel):
    """The answer to ``unload_model()``: the model as it is now (``residency`` ``unloaded``),
    and how many of its tasks were cancelled (only with ``force``)."""

    cancelled: int = 0


@attrs.frozen(kw_only=True)
class Embeddings:
    """What ``embed()`` returns: one vector per input, in the order of the inputs."""

    vectors: tuple[tuple[float, ...], ...]
    model: str
    """The model that computed them."""
    prompt_tokens: int
    """Tokens of the inputs, in all."""

    @property
    def vector(self) -> tuple[float, ...]:
        """The first vector (the only one, for a single string)."""
        return self.vectors[0]


@attrs.frozen(kw_only=True)
class Completion:
    """What ``complete()`` returns: the whole text, and how long each part took."""

    task_id: str
    text: str
    tokens_out: int
    queue_wait_ms: int
    """Time in the queue, as the server measured it."""
    decode_time_ms: float
    """The engine's decode time."""
    total_ms: float
    """From submission to the last event, as this client measured it."""
    artifact_id: str | None = None
    """The artifact the text was kept as (``complete(..., artifact=...)``)."""
    artifact_error: str | None = None
    """Why the text could not be kept as the artifact asked for."""


@attrs.frozen(kw_only=True)
class TaskSummary:
    """One task as ``GET /v1/tasks`` lists it (``list_tasks()``): where it is and what it
    has sent, never its prompt or its text (those are its stream's)."""

    task_id: str
    pool: str
    """The pool (model) whose line holds it."""
    state: TaskState
    priority: Priority
    queue_position: int | None
    """Tasks ahead of it in its pool's line, while queued (0: it runs next); else None."""
    predicted_start_ms: int | None
    """Expected wait from now, while queued; else None."""
    tokens_out: int
    """Tokens sent so far (all of them, once it ended)."""
    max_tokens: int
    replica: str | None
    """The replica running it, or the last that ran it; None before its first dispatch."""
    attempts: int
    age_ms: int
    """Since its admission."""
    run_ms: int | None
    """Since its first dispatch (to its end, once ended); None before it."""
    ended_ms_ago: int | None
    error_code: ErrorCode | None
    error_message: str | None
    """The message of the ``error`` event that failed it (failed tasks only)."""
    session_id: str | None
    face: str
    """The API it came in through: ``v1`` or ``openai``."""


@attrs.frozen(kw_only=True)
class SloWindow:
    """What the tasks that completed in the last ``window_s`` seconds saw (the figures are
    None before the first)."""

    window_s: float
    tasks: int
    ttft_ms_p50: float | None
    """Median time from admission to the first token."""
    ttft_ms_p95: float | None
    tokens_per_s: float | None
    """Decode speed of one stream."""


@attrs.frozen(kw_only=True)
class PredictionAccuracy:
    """How far the ``predicted_start_ms`` given at admission was from the real wait, over
    the last tasks that started (absolute errors; None before the first)."""

    samples: int
    abs_error_ms_p50: int | None
    abs_error_ms_p95: int | None


@attrs.frozen(kw_only=True)
class ReplicaModel:
    """The model a replica serves: its catalog id and digest (None when not known)."""

    id: str | None
    digest: str | None


@attrs.frozen(kw_only=True)
class Replica:
    """One engine of a pool (an entry of ``ReplicaSet.replicas``)."""

    id: str
    """``<model id>/<index>``: the ``replica`` label of its metrics."""
    kind: str
    """``owned`` (a llama-server orchestra runs), ``attached`` or ``openai``."""
    endpoint: str
    engine: str
    engine_version: str | None
    mode: str
    state: str
    """``ready`` (the only state dispatched to), ``starting``, ``unavailable``, ``down``,
    ``suspect``, or the pool's (``draining``, ``unloaded``, ...)."""
    detail: str
    """Why it is not ready, or ``ready``."""
    pid: int | None
    model: ReplicaModel
    slots_total: int
    slots_busy: int
    queue_depth: int
    restarts: int
    slo: SloWindow
    predicted_start: PredictionAccuracy


@attrs.frozen(kw_only=True)
class ReplicaSet:
    """One pool's replicas and the service they delivered (an entry of
    ``GET /v1/replicasets``, ``replica_sets()``)."""

    id: str
    pool_id: str
    state: str
    """The pool's state: ``ready``, ``starting``, ``unavailable``, ``draining``, or while
    its model is not loaded its residency (``unloaded``, ``loading``, ...)."""
    slo: SloWindow
    replicas: tuple[Replica, ...]
    tokens_out_total: int | None = None
    """Tokens the pool sent since orchestra started, those of running tasks so far
    included (so its rate is the pool's live tokens/s); None from an older server."""


@attrs.frozen(kw_only=True)
class DrainResult:
    """The answer to ``drain()`` (``POST /v1/pools/{id}/drain``), once the drain is
    complete."""

    pool_id: str
    state: str
    """Always ``drained``."""
    finished: int
    """Tasks running when the drain began that ended on their own."""
    cancelled: int
    """Running tasks that had sent tokens at the deadline: ended with a retriable
    ``CANCELLED``."""
    requeued: int
    """Running tasks that had sent no token at the deadline: back at the head of the line."""
    queued: int
    """Tasks still waiting; they stay queued until ``resume()`` (or a reload)."""
    waited_ms: int


@attrs.frozen(kw_only=True)
class ResumeResult:
    """The answer to ``resume()`` (``POST /v1/pools/{id}/resume``): the pool's state then."""

    pool_id: str
    state: str
