"""A pool: one model's line, engine and supervisor, as the Models actor holds it
(DESIGN §5), and the snapshot of a model that ``GET /v1/models`` and the metrics read.
Plain values; the Models actor (:mod:`orchestra.actors.models`) owns what changes."""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from orchestra.actors.pool_control import PoolControl
from orchestra.actors.queue import Queue
from orchestra.actors.replica_set import Replica
from orchestra.actors.supervisor import ReplicaSummary
from orchestra.engine.protocol import Engine
from orchestra.pool import Residency
from orchestra.scheduling.slo import SloSnapshot
from orchestra.views import QueueStatistics


class Engines(Protocol):
    """What Models needs from who runs a pool's engines (its
    :class:`~orchestra.actors.replica_set.ReplicaSet`)."""

    @property
    def replicas(self) -> tuple[Replica, ...]: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    def statistics(self) -> ReplicaSummary: ...
    def pids(self) -> list[int]: ...


@attrs.frozen
class ModelSpec:
    """What a pool serves and how Models treats it."""

    id: str
    """The model id (for the single-model configuration, the pool id ``default``)."""
    aliases: tuple[str, ...] = ()
    keep_loaded: bool = False
    idle_unload_s: float = 0.0
    memory_mb: int = 0
    memory_source: str = "configured"
    """``configured``, ``estimated`` (from the file and context) or ``measured``."""
    embeddings: bool = False
    fixed: bool = False
    """The single-model configuration's pool: loaded with the service, never unloaded
    (its engine's own state says whether it serves, as before several models)."""


@attrs.frozen(eq=False)
class Pool:
    """One model's pool: its line, its replicas and who runs their engines."""

    spec: ModelSpec
    queue: Queue
    supervisor: Engines
    control: PoolControl

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def engine(self) -> Engine:
        """The engine that counts a prompt's tokens: a ready replica's."""
        return self.queue.ready_engine()

    def engine_ready(self) -> bool:
        """Its model is loaded and its engine answers."""
        status = self.queue.statistics().pool
        return status.ready and status.residency is Residency.LOADED

    def replica_views(self) -> list[ReplicaView]:
        """Every replica as ``GET /v1/replicasets`` and the metrics show it."""
        views = []
        status = self.queue.statistics().pool
        for replica, entry in zip(
            self.supervisor.replicas, self.queue.replica_states(), strict=True
        ):
            summary = replica.supervisor.statistics()
            state = str(entry.state)
            if status.residency is not Residency.LOADED or status.draining or status.refusing:
                state = status.health_state  # the pool's word (unloaded, draining) first
            views.append(
                ReplicaView(
                    id=replica.id,
                    kind=str(replica.kind),
                    endpoint=replica.endpoint,
                    state=state,
                    detail=entry.detail,
                    slots_total=entry.slots if entry.ready else 0,
                    slots_busy=entry.busy,
                    restarts=summary.restarts,
                    pid=summary.pid,
                    engine_version=summary.engine_version,
                    slo=self.queue.replica_figures(replica.id),
                )
            )
        return views


@attrs.frozen
class ReplicaView:
    """A snapshot of one replica of a pool."""

    id: str
    kind: str
    """``owned``, ``attached`` or ``openai``."""
    endpoint: str
    state: str
    """The replica's :class:`~orchestra.pool.ReplicaState`, or the pool's state when its
    model is not in memory or it is drained."""
    detail: str
    slots_total: int
    slots_busy: int
    restarts: int
    pid: int | None
    engine_version: str | None
    slo: SloSnapshot


@attrs.frozen
class ModelState:
    """A snapshot of one model for ``GET /v1/models`` and the metrics."""

    pool: Pool
    residency: Residency
    memory_mb: int
    memory_source: str
    load_ms: int | None
    error: str | None
    running: int
    waiting: int
    idle_s: float | None
    last_used_s: float | None
    """Seconds since its last submission or task end (None: never used)."""
    default: bool

    @property
    def model(self) -> str:
        """The ``model`` label of its metrics."""
        return self.pool.id

    @property
    def queue(self) -> QueueStatistics:
        return self.pool.queue.statistics()

    @property
    def restarts(self) -> int:
        return self.pool.supervisor.statistics().restarts

    @property
    def replicas(self) -> list[ReplicaView]:
        return self.pool.replica_views()

    @property
    def loaded(self) -> bool:
        return self.residency is Residency.LOADED
