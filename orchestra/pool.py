"""Whether a pool can take work: the one state that health, capabilities, metrics and
admission all read. The Queue is its only writer; each replica's supervisor reports its
replica's state to it, and the pool is ready while any replica is."""

from __future__ import annotations

import enum

import attrs

from orchestra.errors import ErrorCode, Refusal


class PoolState(enum.StrEnum):
    """Whether the pool can take work: ready while any of its replicas is."""

    READY = "ready"
    STARTING = "starting"
    """Loading, restarting, or not answering: 503 ``POOL_UNREADY``, come back soon."""
    UNAVAILABLE = "unavailable"
    """Every replica crashed past its limit: 503 ``POOL_UNAVAILABLE`` until one recovers."""


class ReplicaState(enum.StrEnum):
    """Whether one replica (one engine) can take work, as its supervisor sees it. Only a
    ``ready`` replica is dispatched to."""

    READY = "ready"
    STARTING = "starting"
    """Loading, restarting, or not answering yet."""
    UNAVAILABLE = "unavailable"
    """An owned engine that crashed past its limit (still retried, with backoff)."""
    DOWN = "down"
    """An attached engine that failed several probes in a row: probed again with backoff."""
    SUSPECT = "suspect"
    """An attached engine that answers ``/health`` but let a stream go silent for
    ``decode_timeout_s``: out of dispatch until a probe task completes on it."""


class Residency(enum.StrEnum):
    """Whether the pool's model is in memory, as the Models actor decides (DESIGN §5).

    Only ``loaded`` dispatches. In every other residency a submission is admitted and
    waits (``queued``) for the next load, so a task that arrives while a pool unloads is
    served by the next load instead of failing."""

    LOADED = "loaded"
    LOADING = "loading"
    UNLOADED = "unloaded"
    UNLOADING = "unloading"
    FAILED = "failed"
    """Its last load failed (the tasks waiting for it ended ``MODEL_LOAD_FAILED``); the
    next submission starts another load."""


@attrs.frozen
class ReplicaStatus:
    """One replica's state and slot count, from its supervisor."""

    state: ReplicaState
    slots_total: int
    detail: str


@attrs.frozen
class PoolStatus:
    """The pool as admission, health, capabilities and metrics all see it.

    One value with one writer: the Queue replaces it whole on every change (a replica
    report, a lost engine, a drain, shutdown), and everything that reads the pool reads
    this value. So ``serving`` (health's ``ready``) is true exactly when :meth:`refusal`
    is None: a pool that says it is ready admits the task submitted next, room permitting.
    """

    state: PoolState = PoolState.STARTING
    detail: str = "not probed yet"
    """Why it is not ready (the supervisor's words), or ``ready``."""
    refusing: bool = False
    """Shutting down: every submission is refused."""
    draining: bool = False
    """Drained through the control plane: nothing is dispatched, submissions are refused."""
    residency: Residency = Residency.LOADED
    """Whether the model is in memory; a pool that always is (the single-model
    configuration) stays ``loaded`` and its engine's state alone says whether it serves."""
    pool_id: str = "default"
    """Which pool it is (for the messages that name it)."""
    load_ms: int = 0
    """What loading the model is expected to take (the last load measured), added to the
    predicted start of a task that waits for a load."""

    @property
    def dispatching(self) -> bool:
        """Tasks start now: the model is loaded, the engine ready, the pool not drained."""
        return self.residency is Residency.LOADED and self.ready and not self.draining

    @property
    def ready(self) -> bool:
        """The engine can take work (whether or not the pool is drained)."""
        return self.state is PoolState.READY

    @property
    def serving(self) -> bool:
        """A submission would be admitted (room permitting): ready and not draining, or
        not draining while the model is not in memory (the task waits for its load)."""
        if self.refusing or self.draining:
            return False
        return self.ready or self.residency is not Residency.LOADED

    @property
    def health_state(self) -> str:
        """``ready``, ``starting``, ``unavailable`` or ``draining``, as health reports it;
        a pool whose model is not in memory reports its residency (``unloaded``...)."""
        if self.refusing or self.draining:
            return "draining"
        if self.residency is not Residency.LOADED:
            return str(self.residency)
        return str(self.state)

    def refusal(self) -> Refusal | None:
        """Why a submission is refused now whatever it asks, or None when it is not."""
        if self.refusing:
            return Refusal(
                ErrorCode.POOL_UNREADY, "orchestra is shutting down", retriable=True,
                retry_after_ms=5000,
            )  # fmt: skip
        if self.residency is not Residency.LOADED and not self.draining:
            return None  # admitted: it waits for the next load
        if self.state is PoolState.UNAVAILABLE:
            return Refusal(
                ErrorCode.POOL_UNAVAILABLE,
                f"the engine is unavailable: {self.detail}",
                retriable=True,
                retry_after_ms=30_000,
            )
        if self.draining:
            return Refusal(
                ErrorCode.POOL_UNREADY,
                f"the pool is drained (POST /v1/pools/{self.pool_id}/resume ends the drain)",
                retriable=True,
                retry_after_ms=5000,
            )
        if self.state is not PoolState.READY:
            return Refusal(
                ErrorCode.POOL_UNREADY,
                f"the engine is not ready: {self.detail}",
                retriable=True,
                retry_after_ms=1000,
            )
        return None
