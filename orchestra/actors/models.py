"""Models: which pools are loaded (DESIGN §5).

Every model has a pool: its own Queue (alive for the whole service, so a task for a model
that is not loaded is admitted and waits), its engine adapter, its supervisor and its
PoolControl. The Models actor owns each pool's *residency* (whether its model is in
memory) and is its only writer; it tells the pool's Queue on every change
(:meth:`Queue.set_residency`)::

    Models.run
    └── nursery
        ├── the fixed pool's supervisor      (the single-model configuration: always loaded)
        └── per load: _life(pool)            LOADING → LOADED → UNLOADING → UNLOADED
            └── nursery: supervisor.run      (one llama-server, restarted on crashes)

Its run loop plans (:func:`orchestra.scheduling.placement.plan`) from a snapshot of every
pool whenever a Queue rings its doorbell (a task waits for a load, a pool fell idle), a
load or unload ends, or an idle timer is due; then starts the loads and unloads the plan
names. The races of a model swap are ruled out by construction:

- an unload begins in the Queue's own step (:meth:`Queue.begin_unload`), which refuses an
  ``idle`` unload of a pool that has work, so a task admitted just before is never
  stranded, and one admitted after waits for the next load;
- a pool's next process starts only after its previous life ended, which is after its
  process exited (the supervisor stops it under a shield before returning), and a load
  that needs room waits until the evicted pools' processes have exited;
- a load that fails ends the tasks waiting for it with ``MODEL_LOAD_FAILED`` and touches
  no other pool.

Receives: :meth:`load` and :meth:`unload` from the control plane; rings on its doorbell.
Promises under cancellation (shutdown): every life's supervisor stops its process before
:meth:`run` returns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import attrs
import trio
import trio.lowlevel

from orchestra.actors.pools import ModelState, Pool
from orchestra.actors.queue import Queue
from orchestra.actors.queue_messages import UnloadMode
from orchestra.engine.machine import resident_mb
from orchestra.errors import EngineStartError, ErrorCode, Refusal
from orchestra.messages import Doorbell, Reply
from orchestra.obs.metrics import Metrics
from orchestra.pool import Residency
from orchestra.scheduling import placement
from orchestra.scheduling.placement import PoolView

log = logging.getLogger("orchestra.models")

T = TypeVar("T")

LOAD_GUESS_MS = 3000
"""The load time a waiting task is told to expect before a model was ever loaded."""
MEASURE_EVERY_S = 10.0
"""How often the loaded models' memory is read again (it grows as they run)."""
UNLOAD_DRAIN_S = 30.0
"""How long an unload asked for (without ``force``) waits for running tasks."""


def _later(a: float | None, b: float | None) -> float | None:
    """The later of two moments; None when the first is (the pool has work)."""
    return None if a is None else max(a, b if b is not None else a)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception inside ``group``, however deeply nested."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


@attrs.define(eq=False)
class _Entry:
    """Models' own record of one pool (it alone writes it)."""

    pool: Pool
    residency: Residency
    memory_mb: int
    memory_source: str
    load_ms: int | None = None
    error: str | None = None
    loaded_at: float | None = None
    scope: trio.CancelScope | None = None
    """Cancels the current life (the unload)."""
    exited: trio.Event = attrs.field(factory=trio.Event)
    """Set once the current life ended: its process has exited."""
    loaded: trio.Event = attrs.field(factory=trio.Event)
    """Set when the current load ended (loaded or failed)."""
    unloading: bool = False


@attrs.define
class Models:
    """The registry of models and the one writer of their residency (module docstring).

    Owns: each pool's residency, memory figure and load history, and the nursery its
    engines run in. Receives: doorbell rings from the Queues; :meth:`load` and
    :meth:`unload`. Promises: the resident models' memory stays within ``budget_mb``; no
    busy or ``keep_loaded`` pool is evicted; a pool's next engine starts only after its
    previous one exited; a task never waits for a load that will not come.
    """

    pools: list[Pool]
    budget_mb: int
    default_id: str
    doorbell: Doorbell
    metrics: Metrics = attrs.field(factory=Metrics)
    measure: bool = True
    """Correct each model's memory from its process once it is loaded."""
    _entries: dict[str, _Entry] = attrs.field(init=False)
    _names: dict[str, str] = attrs.field(init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _measured_at: float = attrs.field(default=-math.inf, init=False)

    def __attrs_post_init__(self) -> None:
        self._entries = {
            pool.id: _Entry(
                pool,
                Residency.LOADED if pool.spec.fixed else Residency.UNLOADED,
                pool.spec.memory_mb,
                pool.spec.memory_source,
            )
            for pool in self.pools
        }
        self._names = {}
        for pool in self.pools:
            self._name(pool)

    def _name(self, pool: Pool) -> None:
        for name in (pool.id, *pool.spec.aliases):
            self._names.setdefault(name, pool.id)
        self.metrics.add_model(pool.id)

    def knows(self, name: str) -> bool:
        """A model id or alias of a pool."""
        return name in self._names

    async def adopt(self, pool: Pool) -> None:
        """Serve one more model (a catalog entry registered and verified while running):
        its Queue and PoolControl run in this actor's nursery from now on."""
        if self.knows(pool.id):
            return
        assert self._nursery is not None
        await self._nursery.start(pool.queue.run)
        await self._nursery.start(pool.control.run)
        await pool.queue.set_residency(Residency.UNLOADED, LOAD_GUESS_MS)
        entry = _Entry(pool, Residency.UNLOADED, pool.spec.memory_mb, pool.spec.memory_source)
        self._entries[pool.id] = entry
        self.pools.append(pool)
        self._name(pool)
        log.info("model %s (from the catalog) is served by a pool of its own", pool.id)

    # -- the actor ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the fixed pool's engine (started once its process is), load the
        ``keep_loaded`` models, then plan on every ring until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for entry in self._entries.values():
                if entry.pool.spec.fixed:
                    await nursery.start(entry.pool.supervisor.run)
                    continue
                await entry.pool.queue.set_residency(Residency.UNLOADED, LOAD_GUESS_MS)
                if entry.pool.spec.keep_loaded:
                    self._start_load(entry)
            task_status.started()
            if all(entry.pool.spec.fixed for entry in self._entries.values()):
                await trio.sleep_forever()  # one pool, always loaded: nothing to plan
            while True:
                wake_at = self._plan()
                with trio.move_on_at(wake_at):
                    await self.doorbell.wait()

    def _views(self) -> list[PoolView]:
        views = []
        for entry in self._entries.values():
            q = entry.pool.queue.statistics()
            spec = entry.pool.spec
            views.append(
                PoolView(
                    id=entry.pool.id,
                    residency=entry.residency,
                    memory_mb=entry.memory_mb,
                    keep_loaded=spec.keep_loaded or spec.fixed,
                    idle_unload_s=0.0 if spec.fixed else spec.idle_unload_s,
                    running=q.slots_busy,
                    waiting=q.queue_depth,
                    # A model loaded after its queue fell idle is idle from its load on.
                    idle_since=_later(q.idle_since, entry.loaded_at),
                    last_used=max(q.last_used, entry.loaded_at or 0.0),
                    oldest_wait=q.oldest_wait,
                )
            )
        return views

    def _plan(self) -> float:
        """Start what the plan says; when to plan again at the latest."""
        now = trio.current_time()
        if now >= self._measured_at + MEASURE_EVERY_S:  # not on every ring: it reads /proc
            self._measured_at = now
            for entry in self._entries.values():
                self._measure(entry)
        views = self._views()
        plan = placement.plan(views, self.budget_mb, now)
        for pool_id in plan.refuse:
            entry = self._entries[pool_id]
            view = next(v for v in views if v.id == pool_id)
            reason = placement.too_large(view, views, self.budget_mb)
            self._spawn(self._refuse_waiting, entry, reason or "")
        for pool_id in plan.idle:
            self._start_unload(self._entries[pool_id], "idle", "idle")
        for pool_id in plan.evict:
            self._start_unload(self._entries[pool_id], "idle", "evicted")
        for pool_id in plan.load:
            self._start_load(self._entries[pool_id])
        return plan.wake_at

    def _set(self, entry: _Entry, residency: Residency) -> None:
        """The one place a residency changes."""
        entry.residency = residency
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self) -> None:
        """Return at the next change of any model's residency."""
        await self._changed.wait()

    def _spawn(self, fn: object, *args: object) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    # -- loads -------------------------------------------------------------------------

    def _start_load(self, entry: _Entry) -> None:
        if entry.residency not in (Residency.UNLOADED, Residency.FAILED):
            return
        self._set(entry, Residency.LOADING)  # in this step: the next plan sees it
        entry.error = None
        entry.loaded = trio.Event()
        entry.exited = trio.Event()
        entry.scope = trio.CancelScope()
        self._spawn(self._life, entry)

    async def _life(self, entry: _Entry) -> None:
        """One load of the pool's engine, serving until unloaded; ends once the process
        has exited."""
        pool = entry.pool
        assert entry.scope is not None
        expected = entry.load_ms if entry.load_ms is not None else LOAD_GUESS_MS
        await pool.queue.set_residency(Residency.LOADING, expected)
        log.info("loading model %s (%d MiB, %s)", pool.id, entry.memory_mb, entry.memory_source)
        began = trio.current_time()
        failure: str | None = None
        try:
            with entry.scope:
                try:
                    async with trio.open_nursery() as life:
                        await life.start(self._serve, pool)
                        await self._loaded(entry, trio.current_time() - began)
                except* EngineStartError as group:
                    failure = str(_first(group))
                except* OSError as group:
                    failure = f"cannot start the engine: {_first(group)}"
            if failure is not None:
                await self._failed(entry, failure)
        finally:
            if not entry.loaded.is_set():  # cancelled while loading: the service stops
                entry.error = "the load was cancelled"
                self._set(entry, Residency.FAILED)
                entry.loaded.set()
            entry.exited.set()
        self.doorbell.ring()

    async def _serve(self, pool: Pool, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the pool's supervisor; started once the engine reported ready."""
        async with trio.open_nursery() as serving:
            await serving.start(pool.supervisor.run)
            await pool.queue.wait_ready()
            task_status.started()

    async def _loaded(self, entry: _Entry, seconds: float) -> None:
        entry.load_ms = round(seconds * 1000)
        self._set(entry, Residency.LOADED)
        entry.loaded_at = trio.current_time()
        self._measure(entry)
        await entry.pool.queue.set_residency(Residency.LOADED, entry.load_ms)
        entry.loaded.set()
        self.metrics.model_loaded(entry.pool.id, seconds)
        log.info(
            "model %s loaded in %.2f s (%d MiB, %s)",
            entry.pool.id,
            seconds,
            entry.memory_mb,
            entry.memory_source,
        )
        self.doorbell.ring()

    async def _failed(self, entry: _Entry, why: str) -> None:
        # The Queue first: until its waiting tasks have failed, the pool stays "loading",
        # so no plan starts another load for tasks that are about to fail.
        message = f"model {entry.pool.id!r} did not load: {why}"
        log.error("%s; the tasks waiting for it fail", message)
        await entry.pool.queue.set_residency(
            Residency.FAILED, entry.load_ms or LOAD_GUESS_MS,
            (ErrorCode.MODEL_LOAD_FAILED, message),
        )  # fmt: skip
        entry.error = why
        self._set(entry, Residency.FAILED)
        entry.loaded.set()
        self.metrics.model_loaded(entry.pool.id, None)

    async def _refuse_waiting(self, entry: _Entry, reason: str) -> None:
        await entry.pool.queue.set_residency(
            entry.residency, entry.load_ms or LOAD_GUESS_MS, (ErrorCode.MODEL_TOO_LARGE, reason)
        )

    def _measure(self, entry: _Entry) -> None:
        """Correct an estimated memory figure from what the process holds (a configured
        ``memory_mb`` stands: on a GPU the RAM says little)."""
        if not self.measure or entry.residency is not Residency.LOADED:
            return
        if entry.pool.spec.memory_source == "configured":
            return
        pids = entry.pool.supervisor.pids()
        each = [resident_mb(pid) for pid in pids]
        used = sum(mb for mb in each if mb is not None) if pids and None not in each else None
        if used is not None and (entry.memory_source != "measured" or used > entry.memory_mb):
            entry.memory_mb, entry.memory_source = used, "measured"

    # -- unloads -----------------------------------------------------------------------

    def _start_unload(self, entry: _Entry, mode: UnloadMode, reason: str) -> None:
        if entry.residency is not Residency.LOADED or entry.unloading:
            return
        entry.unloading = True
        self._spawn(self._unload, entry, mode, reason, None)

    async def _unload(
        self, entry: _Entry, mode: UnloadMode, reason: str, reply: list[int] | None
    ) -> None:
        """Stop dispatching (when the Queue agrees), let running tasks finish or cancel
        them, then stop the engine and wait for its process to exit."""
        queue = entry.pool.queue
        try:
            began, cancelled = await queue.begin_unload(mode)
            if not began:
                return  # work arrived before the unload began: it stays loaded
            self._set(entry, Residency.UNLOADING)
            if reply is not None:
                reply.append(cancelled)
            log.info("unloading model %s (%s)", entry.pool.id, reason)
            with trio.move_on_after(UNLOAD_DRAIN_S):
                await queue.wait_quiet()
            await queue.stop_running()
            assert entry.scope is not None
            entry.scope.cancel()
            await entry.exited.wait()
            entry.loaded_at = None
            self._set(entry, Residency.UNLOADED)
            await queue.set_residency(Residency.UNLOADED, entry.load_ms or LOAD_GUESS_MS)
            self.metrics.model_unloaded(entry.pool.id, reason)
            log.info("model %s unloaded (%s)", entry.pool.id, reason)
        finally:
            entry.unloading = False
            self.doorbell.ring()

    # -- requests ----------------------------------------------------------------------

    async def _detached(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` in the actor's nursery and wait for its outcome: a caller that
        leaves (a client that disconnects) does not stop a load or an unload half-way."""
        assert self._nursery is not None
        reply: Reply[T | Refusal] = Reply()

        async def run() -> None:
            try:
                reply.send(await work())
            except Refusal as exc:
                reply.send(exc)

        self._nursery.start_soon(run)
        result = await reply.receive()
        if isinstance(result, Refusal):
            raise result
        return result

    async def load(self, name: str) -> ModelState:
        """Load a model (at once, whatever the plan) and return once it is loaded; the
        single-model pool is always loaded (its state at once).

        Raises Refusal: ``NOT_FOUND``, ``CONFLICT`` (no room: the others are busy or
        ``keep_loaded``), ``MODEL_TOO_LARGE`` (when it could never fit),
        ``MODEL_LOAD_FAILED``.
        """
        entry = self._entries[self.route(name).id]
        if entry.pool.spec.fixed:
            return self.state(entry.pool.id)
        return await self._detached(lambda: self._load_now(entry))

    async def _load_now(self, entry: _Entry) -> ModelState:
        while entry.residency is not Residency.LOADED:
            if entry.residency in (Residency.UNLOADED, Residency.FAILED):
                needed = self._views()
                view = next(v for v in needed if v.id == entry.pool.id)
                room = self.budget_mb - sum(v.memory_mb for v in needed if v.resident)
                if view.memory_mb > room:
                    self._make_room(entry, view.memory_mb - room)
                    await self._wait_for_room(entry)
                    continue
                self._start_load(entry)
            if entry.residency is Residency.UNLOADING:
                await entry.exited.wait()
                await trio.lowlevel.checkpoint()
                continue
            await entry.loaded.wait()
            if entry.residency is Residency.FAILED:
                raise Refusal(
                    ErrorCode.MODEL_LOAD_FAILED,
                    f"model {entry.pool.id!r} did not load: {entry.error}",
                )
        return self.state(entry.pool.id)

    def _make_room(self, entry: _Entry, need_mb: int) -> None:
        """Unload the least recently used idle pools that make ``need_mb`` of room, or
        none of them (CONFLICT) when even all of them would not."""
        need_mb -= sum(
            e.memory_mb for e in self._entries.values() if e.residency is Residency.UNLOADING
        )
        views = [v for v in self._views() if v.evictable and v.id != entry.pool.id]
        chosen = []
        for view in sorted(views, key=lambda v: (v.last_used, v.id)):
            if need_mb <= 0:
                break
            chosen.append(view)
            need_mb -= view.memory_mb
        if need_mb <= 0:
            for view in chosen:
                self._start_unload(self._entries[view.id], "idle", "evicted")
        else:
            raise Refusal(
                ErrorCode.CONFLICT,
                f"no room to load model {entry.pool.id!r}: the other loaded models are busy "
                f"or keep_loaded; try again when they are idle",
                retriable=True,
                retry_after_ms=5000,
            )

    async def _wait_for_room(self, entry: _Entry) -> None:
        for other in self._entries.values():
            if other.residency is Residency.UNLOADING:
                await other.exited.wait()
        await trio.lowlevel.checkpoint()

    async def unload(self, name: str, *, force: bool = False) -> tuple[ModelState, int]:
        """Unload a model: let its running tasks finish (``force``: cancel them), stop
        its engine; the model afterwards and how many tasks were cancelled. Tasks that
        wait stay queued for its next load.

        Raises Refusal: ``NOT_FOUND``; ``CONFLICT`` for the fixed pool.
        """
        entry = self._entries[self.route(name).id]
        if entry.pool.spec.fixed:
            raise Refusal(
                ErrorCode.CONFLICT,
                "the single-model configuration ([replica] or attached) is always loaded; "
                "configure [models.ID] tables to load and unload models",
            )
        return await self._detached(lambda: self._unload_now(entry, force))

    async def _unload_now(self, entry: _Entry, force: bool) -> tuple[ModelState, int]:
        if entry.residency is Residency.LOADING:
            await entry.loaded.wait()
        cancelled: list[int] = []
        if entry.residency is Residency.LOADED and not entry.unloading:
            entry.unloading = True
            mode: UnloadMode = "force" if force else "drain"
            await self._unload(entry, mode, "asked", cancelled)
        elif entry.residency is Residency.UNLOADING:
            await entry.exited.wait()
        return self.state(entry.pool.id), sum(cancelled)

    # -- reads -------------------------------------------------------------------------

    def route(self, name: str | None) -> Pool:
        """The pool a request's ``model`` names (None or empty: the default model).

        Raises Refusal ``NOT_FOUND`` naming the known models, or ``MODEL_TOO_LARGE``.
        """
        pool_id = self.default_id if not name else self._names.get(name)
        if pool_id is None:
            fixed = self._fixed_route(name)
            if fixed is not None:
                return fixed
            known = ", ".join(self._known())
            raise Refusal(
                ErrorCode.NOT_FOUND,
                f"no model {name!r}; the models are: {known} (GET /v1/models)",
                problems=(f"model: {name!r} is not a model here (known: {known})",),
            )
        entry = self._entries[pool_id]
        if entry.pool.spec.fixed:
            return entry.pool
        memory = [  # no Queue is read: this runs for every request
            PoolView(e.pool.id, e.residency, e.memory_mb, e.pool.spec.keep_loaded)
            for e in self._entries.values()
        ]
        view = next(v for v in memory if v.id == pool_id)
        reason = placement.too_large(view, memory, self.budget_mb)
        if reason is not None:
            figures = {"memory_mb": view.memory_mb, "budget_mb": self.budget_mb}
            raise Refusal(ErrorCode.MODEL_TOO_LARGE, reason, details=figures)
        return entry.pool

    def _known(self) -> list[str]:
        """The model ids a request may name (the single-model pool's: its catalog id)."""
        if len(self.pools) == 1 and self.pools[0].spec.fixed:
            return [self.pools[0].control.model_id or "default"]
        return list(self._entries)

    def _fixed_route(self, name: str | None) -> Pool | None:
        """The single-model pool answers to its catalog id, ``default``, and any name
        while its model has no catalog id (an attached engine serving an unknown file)."""
        if len(self.pools) != 1 or not self.pools[0].spec.fixed:
            return None
        pool = self.pools[0]
        served = pool.control.model_id
        return pool if served is None or name in (served, "default") else None

    def pool(self, pool_id: str) -> Pool:
        """The pool with this id (one :meth:`route` returned)."""
        return self._entries[pool_id].pool

    def answer_name(self, pool: Pool, asked: str) -> str:
        """The model an answer names: the pool's model id; for the single-model pool its
        catalog id, or the name asked for while it has none."""
        if pool.spec.fixed:
            return pool.control.model_id or asked
        return pool.id

    def find(self, task_id: str) -> Queue | None:
        """The Queue that knows task ``task_id`` (None: no pool does)."""
        for pool in self.pools:
            if pool.queue.view(task_id) is not None:
                return pool.queue
        return None

    def find_session(self, session_id: str) -> Queue | None:
        """The Queue holding session ``session_id`` (None: no pool does)."""
        for pool in self.pools:
            if pool.queue.session_view(session_id) is not None:
                return pool.queue
        return None

    @property
    def default(self) -> Pool:
        return self._entries[self.default_id].pool

    def __iter__(self) -> Iterator[Pool]:
        return iter(self.pools)

    def state(self, pool_id: str) -> ModelState:
        """A snapshot of one model."""
        entry = self._entries[pool_id]
        q = entry.pool.queue.statistics()
        now = trio.current_time()
        idle = None
        since = _later(q.idle_since, entry.loaded_at)
        if entry.residency is Residency.LOADED and since is not None:
            idle = now - since
        return ModelState(
            pool=entry.pool,
            residency=entry.residency,
            memory_mb=entry.memory_mb,
            memory_source=entry.memory_source,
            load_ms=entry.load_ms,
            error=entry.error,
            running=q.slots_busy,
            waiting=q.queue_depth,
            idle_s=idle,
            last_used_s=None if q.last_used == 0 else now - q.last_used,
            default=pool_id == self.default_id,
        )

    def states(self) -> list[ModelState]:
        """A snapshot of every model, in configuration order."""
        return [self.state(pool.id) for pool in self.pools]

    def resident_mb(self) -> int:
        """The memory of the models loading, loaded or unloading."""
        return sum(e.memory_mb for e in self._entries.values() if e.residency in placement.RESIDENT)

    def next_idle_unload(self) -> float:
        """When the next idle pool is due to unload (infinity: none)."""
        return min((v.idle_deadline() for v in self._views()), default=math.inf)
