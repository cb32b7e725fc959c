"""ReplicaSet: the replicas of one pool and the supervisor of each, run together.

A pool serves its model from one or more replicas (DESIGN §5): llama-server processes
orchestra owns (``owned``), llama-servers it attaches to anywhere (``attached``), and
servers that speak the OpenAI API (``openai``: vLLM, SGLang, TGI, Ollama, another
orchestra). Each replica has its own supervisor, which tells the pool's Queue about that
replica only; the Queue dispatches across the ready ones.

::

    ReplicaSet.run
    └── nursery
        ├── replica 0's supervisor   (owned: its process; attached/openai: its probes)
        ├── replica 1's supervisor
        └── ...
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from orchestra.actors.queue_messages import ReplicaLink
from orchestra.actors.supervisor import ReplicaSummary, Supervisor
from orchestra.engine.protocol import EngineProps
from orchestra.errors import EngineStartError
from orchestra.pool import ReplicaState, ReplicaStatus

log = logging.getLogger("orchestra.replicas")


class ReplicaKind(enum.StrEnum):
    OWNED = "owned"
    """A llama-server process orchestra starts, restarts and stops."""
    ATTACHED = "attached"
    """A llama-server someone else runs; orchestra only probes it."""
    OPENAI = "openai"
    """Any server that speaks ``/v1/completions`` and ``/v1/chat/completions``."""


@attrs.frozen(eq=False)
class Replica:
    """One replica: where it is, what kind it is, how the Queue reaches it, who watches it."""

    link: ReplicaLink
    kind: ReplicaKind
    endpoint: str
    supervisor: Supervisor

    @property
    def id(self) -> str:
        return self.link.id


@attrs.frozen
class SetSummary:
    """What the HTTP face reads of a pool's engines: its first replica's identity, and
    the restarts of them all."""

    first: ReplicaSummary
    restarts: int

    @property
    def props(self) -> EngineProps | None:
        return self.first.props

    @property
    def engine_version(self) -> str | None:
        return self.first.engine_version

    @property
    def model_digest(self) -> str | None:
        return self.first.model_digest

    @property
    def model_path(self) -> str | None:
        return self.first.model_path

    @property
    def pid(self) -> int | None:
        return self.first.pid


@attrs.define(eq=False)
class ReplicaSet:
    """Runs the supervisor of every replica of one pool.

    Owns: the nursery its replicas' supervisors run in.
    Receives: nothing; each supervisor talks to the pool's Queue about its own replica.
    Promises: started once every supervisor has started. A replica that cannot start its
    first process on a load on demand (``load_once``) is reported ``unavailable`` and
    left so until the next load, while the others serve; when every owned replica failed
    so and no other kind can come up, :meth:`run` raises :class:`EngineStartError` (the
    load failed). Under cancellation every supervisor stops its process first (each
    shields its own stop), so no engine outlives :meth:`run`.
    """

    replicas: tuple[Replica, ...]
    report: Callable[[ReplicaStatus, int], Awaitable[None]]
    """The Queue's :meth:`~orchestra.actors.queue.Queue.replica_status`."""
    _failed: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if not self.replicas:
            raise ValueError("a pool has at least one replica")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every supervisor until cancelled; started once each has started."""
        self._failed = 0
        async with trio.open_nursery() as nursery:
            for index, replica in enumerate(self.replicas):
                await nursery.start(self._run_one, index, replica)
            task_status.started()

    async def _run_one(
        self, index: int, replica: Replica, *, task_status: trio.TaskStatus[None]
    ) -> None:
        started = False
        try:
            async with trio.open_nursery() as inner:
                await inner.start(replica.supervisor.run)
                started = True
                task_status.started()
        except EngineStartError as exc:
            self._failed += 1
            if self._failed >= len(self.replicas):  # only owned replicas fail to start
                raise
            log.error("replica %s did not start: %s; the others serve", replica.id, exc)
            status = ReplicaStatus(ReplicaState.UNAVAILABLE, 0, f"did not load: {exc}")
            await self.report(status, index)
            if not started:
                task_status.started()
            await trio.sleep_forever()

    def statistics(self) -> SetSummary:
        """The first replica's identity and every replica's restarts."""
        restarts = sum(r.supervisor.statistics().restarts for r in self.replicas)
        return SetSummary(self.replicas[0].supervisor.statistics(), restarts)

    def pids(self) -> list[int]:
        """The processes of the owned replicas that run now."""
        return [pid for r in self.replicas if (pid := r.supervisor.statistics().pid) is not None]

    @property
    def first(self) -> Supervisor:
        return self.replicas[0].supervisor
