"""PoolControl: drains, resumes and reloads the pool, one operation at a time.

A *drain* stops dispatching (submissions get 503 ``POOL_UNREADY``, waiting tasks keep
their place), lets the running tasks finish until a deadline, then puts those that have
sent no token back at the head of the queue and cancels the others. The pool stays
drained until ``resume`` or a reload ends it.

A *reload* checks the catalog entry (active, its file hashes to the registered sha256)
before touching anything, drains, swaps the engine onto the new model and resumes. When
the new model does not load, the supervisor rolls back to the previous one and the reload
waits until that serves again, so the pool is never left without a model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePath
from typing import TypeVar

import attrs
import trio

from orchestra.actors.owned_supervisor import OwnedReplicaSupervisor
from orchestra.actors.queue import Queue
from orchestra.actors.supervisor import Supervisor
from orchestra.catalog import Catalog, CatalogError, CatalogModel, ModelState, TrustState
from orchestra.errors import ErrorCode, Refusal
from orchestra.messages import Reply
from orchestra.pool import PoolState

log = logging.getLogger("orchestra.control")

T = TypeVar("T")

DEFAULT_DRAIN_DEADLINE_S = 30.0
"""How long running tasks get to finish when a drain names no deadline."""
SESSION_CLOSE_S = 10.0
"""After the deadline, how long the stopped sessions get to close their engine streams."""
ROLLBACK_GRACE_S = 10.0
"""Beyond ``start_timeout_s``, how long a failed reload waits for the old model to serve."""


@attrs.frozen
class DrainReport:
    """What a drain did to the tasks that were running or waiting when it began."""

    finished: int
    """Running at the start and ended on their own before the deadline."""
    cancelled: int
    """Still running at the deadline with tokens sent: cancelled (``CANCELLED``, retriable)."""
    requeued: int
    """Still running at the deadline without a token: back at the head of the queue."""
    queued: int
    """Waiting now; they run once the pool resumes."""
    waited_ms: int


@attrs.frozen
class ModelRef:
    """Which model a pool serves: its catalog id (when known) and digest."""

    id: str | None
    digest: str | None


@attrs.frozen
class ReloadReport:
    """A reload that succeeded."""

    model: ModelRef
    previous_model: ModelRef
    drain: DrainReport
    load_ms: int


@attrs.define(eq=False)
class ReloadFailed(Refusal):
    """``MODEL_LOAD_FAILED``: the new model did not load and the pool rolled back to
    ``rolled_back_to``; ``drain`` says what the drain before the swap did."""

    rolled_back_to: ModelRef | None = None
    drain: DrainReport | None = None


@attrs.define
class PoolControl:
    """The control plane's actor: one drain or reload at a time, run to its end.

    Owns: the operation under way (at most one) and the nursery it runs in, so a drain or
    reload finishes even when the client that asked for it disconnects; and which catalog
    model the pool serves (:attr:`model_id`).
    Receives: :meth:`drain`, :meth:`resume` and :meth:`reload` from the HTTP face; a
    second operation while one is under way gets 409 ``CONFLICT``.
    Promises under cancellation (shutdown): an operation stops where it is; the service
    then drains and stops the engine itself, so nothing outlives it.
    """

    queue: Queue
    supervisor: Supervisor
    catalog: Catalog
    start_timeout_s: float
    model_id: str | None = None
    """The catalog id of the model being served (None: not in the catalog, or an attached
    engine serving a file that is not on this machine)."""
    swaps_models: bool = True
    """A reload may swap the model (the single-model configuration); a pool of
    ``[models]`` serves its own model only, loaded and unloaded by the Models actor."""
    _operation: str | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _followed: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery operations run in; ready at once. An attached engine's model is
        adopted each time the engine comes up (:meth:`_follow_attached_model`)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.attached and self.swaps_models:  # a [models] pool is its configured id
                nursery.start_soon(self._follow_attached_model)
            task_status.started()
            await trio.sleep_forever()

    async def _follow_attached_model(self) -> None:
        """Each time an attached engine becomes ready: the model file it serves (``/props``)
        is registered in the catalog under its name without ``.gguf`` unless it is there,
        and becomes :attr:`model_id` (so ``GET /v1/models`` lists it and the OpenAI face
        knows its name). A file not on this machine (a remote engine) is not adopted."""
        while True:
            await self.queue.wait_ready()
            props = self.supervisor.statistics().props
            self.model_id = None
            if props is not None and props.model_path:
                self.model_id = await self._adopt(Path(props.model_path))
            self._followed.set()
            await self.queue.wait_ready(False)
            self._followed = trio.Event()

    async def wait_model_known(self) -> None:
        """Return once :attr:`model_id` says what the ready engine serves (at once for an
        owned engine, whose model is known from its configuration)."""
        if self.attached and self.swaps_models:
            await self._followed.wait()

    async def _adopt(self, path: Path) -> str | None:
        if not await trio.to_thread.run_sync(path.is_file):
            return None
        try:
            entry = await self.catalog.ensure(path.stem, str(path), None)
        except (Refusal, CatalogError) as exc:
            log.warning("the attached engine's model %s is not in the catalog: %s", path, exc)
            return None
        return entry.id if entry.path == str(path) else None

    @property
    def attached(self) -> bool:
        """The engine is someone else's (attached mode)."""
        return not isinstance(self.supervisor, OwnedReplicaSupervisor)

    @property
    def can_reload(self) -> bool:
        """True when orchestra owns the engine and so can restart it on another model."""
        return self.swaps_models and isinstance(self.supervisor, OwnedReplicaSupervisor)

    # -- operations --------------------------------------------------------------------

    async def drain(self, deadline_s: float = DEFAULT_DRAIN_DEADLINE_S) -> DrainReport:
        """Drain the pool; see the module docstring."""
        return await self._exclusive("drain", lambda: self._drain(deadline_s))

    async def resume(self) -> None:
        """End a drain: dispatch again and admit new tasks."""
        if self._operation is not None:
            raise self._busy()
        await self.queue.set_draining(False)
        log.info("pool resumed")

    async def reload(
        self, model_ref: str, deadline_s: float = DEFAULT_DRAIN_DEADLINE_S
    ) -> ReloadReport:
        """Serve catalog model ``model_ref`` from now on; see the module docstring.

        Raises Refusal: ``NOT_FOUND`` (unknown id), ``CONFLICT`` (attached mode, retired,
        digest mismatch, another operation), ``MODEL_LOAD_FAILED`` (rolled back).
        """
        if not self.swaps_models:
            raise Refusal(
                ErrorCode.CONFLICT,
                "this pool serves one model of [models]; load another model by naming it "
                "(POST /v1/models/{id}/load, or a task's model)",
            )
        if not self.can_reload:
            raise Refusal(
                ErrorCode.CONFLICT,
                "orchestra does not own the engine (attached mode, no [replica] table), so "
                "it cannot load another model",
            )
        return await self._exclusive("reload", lambda: self._reload(model_ref, deadline_s))

    # -- the work, in the actor's nursery ----------------------------------------------

    async def _exclusive(self, name: str, work: Callable[[], Awaitable[T]]) -> T:
        if self._operation is not None:
            raise self._busy()
        assert self._nursery is not None
        self._operation = name
        reply: Reply[T | Refusal] = Reply()

        async def operate() -> None:
            try:
                reply.send(await work())
            except Refusal as exc:
                reply.send(exc)
            except CatalogError as exc:  # the database failed: answer 500, keep serving
                log.error("%s failed: %s", name, exc)
                reply.send(Refusal(ErrorCode.INTERNAL, f"{name} failed: {exc}"))
            finally:
                self._operation = None

        self._nursery.start_soon(operate)
        result = await reply.receive()
        if isinstance(result, Refusal):
            raise result
        return result

    def _busy(self) -> Refusal:
        return Refusal(
            ErrorCode.CONFLICT,
            f"a {self._operation} of this pool is under way; try again when it has finished",
            retriable=True,
            retry_after_ms=1000,
        )

    async def _drain(self, deadline_s: float) -> DrainReport:
        began_at = trio.current_time()
        began = await self.queue.set_draining(True)
        log.info(
            "draining: %d running, %d waiting, deadline %.1f s",
            began.running,
            began.queued,
            deadline_s,
        )
        with trio.move_on_after(deadline_s):
            await self.queue.wait_quiet()
        requeued, cancelled = await self.queue.stop_running()
        with trio.move_on_after(SESSION_CLOSE_S):
            await self.queue.wait_quiet()
        report = DrainReport(
            finished=max(0, began.running - requeued - cancelled),
            cancelled=cancelled,
            requeued=requeued,
            queued=self.queue.statistics().queue_depth,
            waited_ms=round((trio.current_time() - began_at) * 1000),
        )
        log.info("drained: %s", report)
        return report

    async def _reload(self, model_ref: str, deadline_s: float) -> ReloadReport:
        assert isinstance(self.supervisor, OwnedReplicaSupervisor)
        entry = await self._loadable(model_ref)
        assert entry.digest is not None  # _loadable verified it
        before = self.supervisor.statistics()
        previous = ModelRef(self.model_id, before.model_digest or None)
        drained = await self._drain(deadline_s)
        loading_at = trio.current_time()
        failure = await self.supervisor.load_model(Path(entry.path), entry.digest)
        if failure is None:
            self.model_id = entry.id
            await self.queue.set_draining(False)
            log.info("reloaded: now serving %s (%s)", entry.id, entry.digest)
            return ReloadReport(
                model=ModelRef(entry.id, entry.digest),
                previous_model=previous,
                drain=drained,
                load_ms=round((trio.current_time() - loading_at) * 1000),
            )
        with trio.move_on_after(self.start_timeout_s + ROLLBACK_GRACE_S):
            await self.queue.wait_pool_state(PoolState.READY)
        await self.queue.set_draining(False)
        raise ReloadFailed(
            ErrorCode.MODEL_LOAD_FAILED,
            f"model {entry.id!r} did not load ({failure}); the pool rolled back to "
            f"{previous.id or PurePath(before.model_path).name}",
            rolled_back_to=previous,
            drain=drained,
        )

    async def _loadable(self, model_ref: str) -> CatalogModel:
        """The catalog entry, verified now; Refusal when it must not be loaded."""
        entry = await self.catalog.get(model_ref)
        if entry.state is ModelState.RETIRED:
            raise Refusal(
                ErrorCode.CONFLICT,
                f"model {model_ref!r} is retired; set its state to active to load it",
            )
        entry = await self.catalog.verify(model_ref)
        if entry.trust_state is TrustState.MISMATCH:
            raise Refusal(
                ErrorCode.CONFLICT,
                f"model {model_ref!r} does not match its registered sha256 (file has "
                f"{entry.digest}); it was not loaded",
            )
        return entry
