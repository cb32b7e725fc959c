"""What the HTTP face talks to: the service's actors, handed to each blueprint when the
app is built. Handlers call their methods; they never read or change their fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from orchestra.actors.admission import Admission
from orchestra.actors.models import Models
from orchestra.actors.pool_control import PoolControl
from orchestra.actors.pools import Pool
from orchestra.actors.queue import Queue
from orchestra.actors.supervisor import Supervisor
from orchestra.artifacts import ArtifactStore
from orchestra.catalog import Catalog, CatalogModel
from orchestra.config import Config
from orchestra.errors import ErrorCode, Refusal
from orchestra.obs.metrics import Metrics
from orchestra.obs.tracing import Tracing
from orchestra.tools import Tools


@attrs.frozen
class Actors:
    """The actors of one service, and its configuration."""

    config: Config
    admission: Admission
    models: Models
    catalog: Catalog
    metrics: Metrics
    artifacts: ArtifactStore = attrs.field(kw_only=True)
    tools: Tools | None = attrs.field(default=None, kw_only=True)
    """The agents' tools (``POST /v1/tools/...``); the service always sets them."""
    tracing: Tracing = attrs.field(factory=Tracing, kw_only=True)
    """Traces of the tasks (off unless ``[tracing]`` turns it on)."""
    adopt: Callable[[CatalogModel], Awaitable[None]] | None = None
    """Give a catalog entry registered or verified while running a pool of its own
    (several models only)."""

    def pool(self, pool_id: str) -> Pool:
        """The pool ``pool_id``, or a 404 ``NOT_FOUND`` naming the pools there are."""
        known = [pool.id for pool in self.models]
        if pool_id not in known:
            raise Refusal(
                ErrorCode.NOT_FOUND, f"no pool {pool_id!r} (the pools: {', '.join(known)})"
            )
        return self.models.pool(pool_id)

    @property
    def queue(self) -> Queue:
        """The default model's Queue."""
        return self.models.default.queue

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of the default model's first replica (the one replica of the
        single-model configuration)."""
        return self.models.default.supervisor.replicas[0].supervisor

    @property
    def control(self) -> PoolControl:
        """The default model's PoolControl."""
        return self.models.default.control
