"""Placement: which models to load and which to unload, inside the memory budget
(DESIGN §5). Pure: the Models actor hands it a snapshot of every pool and does what the
:class:`Plan` says.

The rules:

- a model with tasks waiting and nothing in memory is loaded when it fits beside what is
  resident (loading, loaded or still unloading: memory counts until the process exited);
- when it does not fit, the least recently used *idle* pools (no task running or waiting,
  not ``keep_loaded``) are unloaded first, but only when unloading them makes enough
  room; the load itself waits for a later plan, once their processes have exited;
- the models waiting are served in the order their oldest task was admitted, and a model
  that cannot load yet holds back the ones behind it (so a large model is not starved by
  small ones);
- a loaded pool idle for its ``idle_unload_s`` (from the end of its last task) is
  unloaded, unless it is ``keep_loaded``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from orchestra.pool import Residency

RESIDENT = frozenset({Residency.LOADING, Residency.LOADED, Residency.UNLOADING})
"""The residencies whose memory counts against the budget."""


@attrs.frozen
class PoolView:
    """One pool as placement sees it."""

    id: str
    residency: Residency
    memory_mb: int
    keep_loaded: bool = False
    idle_unload_s: float = 0.0
    """0: never unloaded for being idle."""
    running: int = 0
    waiting: int = 0
    idle_since: float | None = None
    """When its last task ended with nothing else to do; None while it has work."""
    last_used: float = 0.0
    oldest_wait: float | None = None
    """When its longest-waiting task was admitted; None when none waits."""

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.waiting > 0

    @property
    def resident(self) -> bool:
        return self.residency in RESIDENT

    @property
    def evictable(self) -> bool:
        """Loaded, idle and not ``keep_loaded``: may be unloaded to make room."""
        return self.residency is Residency.LOADED and not self.busy and not self.keep_loaded

    def idle_deadline(self) -> float:
        """When it is due to be unloaded for being idle (infinity: never)."""
        if not self.evictable or self.idle_unload_s <= 0 or self.idle_since is None:
            return math.inf
        return self.idle_since + self.idle_unload_s


@attrs.frozen
class Plan:
    """What to do now, and when to plan again at the latest."""

    load: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()
    """Idle pools to unload to make room for a model that waits."""
    idle: tuple[str, ...] = ()
    """Pools idle past their ``idle_unload_s``."""
    refuse: tuple[str, ...] = ()
    """Models with tasks waiting that can never load (see :func:`too_large`): their
    waiting tasks end ``MODEL_TOO_LARGE``."""
    wake_at: float = math.inf


OVERHEAD_MB = 128
"""Beyond the weights and the KV cache: compute buffers and the process itself."""
KV_BYTES_PER_TOKEN = 32 * 1024
"""A generous KV cache per token of context for the small models this targets (K and V,
f16, over every layer); corrected once the process is measured."""


def estimate_mb(file_bytes: int, ctx_size: int) -> int:
    """What a model takes before it was measured: its file, its KV cache, an overhead."""
    return (file_bytes + ctx_size * KV_BYTES_PER_TOKEN >> 20) + OVERHEAD_MB


def too_large(model: PoolView, pools: Sequence[PoolView], budget_mb: int) -> str | None:
    """Why ``model`` can never load (its memory beside the ``keep_loaded`` models', which
    never leave, exceeds the budget), or None."""
    kept = sum(p.memory_mb for p in pools if p.keep_loaded and p.resident and p.id != model.id)
    if model.memory_mb + kept <= budget_mb:
        return None
    beside = f" beside {kept} MiB of keep_loaded models" if kept else ""
    return (
        f"model {model.id!r} needs {model.memory_mb} MiB{beside}; the memory budget is "
        f"{budget_mb} MiB (placement.memory_budget_mb)"
    )


def plan(pools: Sequence[PoolView], budget_mb: int, now: float) -> Plan:
    """What to load and unload now (see the module docstring)."""
    idle = [p for p in pools if p.idle_deadline() <= now]
    later = [p.idle_deadline() for p in pools if p.idle_deadline() > now]
    leaving = {p.id for p in idle}
    resident = sum(p.memory_mb for p in pools if p.resident)
    freeing = sum(p.memory_mb for p in pools if p.residency is Residency.UNLOADING)
    freeing += sum(p.memory_mb for p in idle)
    wanted = sorted(
        (p for p in pools if not p.resident and p.waiting > 0 and p.oldest_wait is not None),
        key=lambda p: (p.oldest_wait, p.id),
    )
    load: list[str] = []
    evict: list[str] = []
    refuse = [p.id for p in wanted if too_large(p, pools, budget_mb) is not None]
    for model in wanted:
        if model.id in refuse:
            continue
        room = budget_mb - resident
        if model.memory_mb <= room:
            load.append(model.id)
            resident += model.memory_mb
            continue
        need = model.memory_mb - room - freeing
        if need > 0:
            candidates = sorted(
                (p for p in pools if p.evictable and p.id not in leaving),
                key=lambda p: (p.last_used, p.id),
            )
            chosen: list[PoolView] = []
            for candidate in candidates:
                if need <= 0:
                    break
                chosen.append(candidate)
                need -= candidate.memory_mb
            if need <= 0:
                evict += [p.id for p in chosen]
                leaving.update(p.id for p in chosen)
        break  # it waits for room; the models behind it wait behind it
    return Plan(
        load=tuple(load),
        evict=tuple(evict),
        idle=tuple(p.id for p in idle),
        refuse=tuple(refuse),
        wake_at=min(later, default=math.inf),
    )
