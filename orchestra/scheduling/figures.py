"""The Queue's figures: what it learns from the tasks it served (service rate, work per
task, prediction errors, time to first token and speed) and what it plans with (the
predicted start of a task, the time to come back, the room an event log needs). Pure: no
trio; the Queue passes the time in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from orchestra.messages import Completed
from orchestra.scheduling.estimate import (
    PredictionErrors,
    ServiceRate,
    WorkModel,
    predicted_start_s,
)
from orchestra.scheduling.progress import max_frames
from orchestra.scheduling.record import Task
from orchestra.scheduling.slo import Sample, SloSnapshot, SloWindow
from orchestra.task import Endpoint, TaskRequest

LOG_EXTRA = 4
"""Events beyond ``max_tokens`` a task's log holds (``started``, the end, and slack); a
task that asked for ``metrics`` events gets room for every one it can get on top."""


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds."""
    return round(seconds * 1000)


CHAT_EXTRA = 64
"""Pieces of a chat answer beyond two per token (tool calls' names and ids)."""


def log_limit(request: TaskRequest) -> int:
    """Room for every event of a task: its tokens, ``started``, its ``metrics`` events. A
    chat answer's token may come as two pieces (text and a tool call's), and a tool call's
    name and id take pieces of their own."""
    frames = max_frames(request.max_tokens) if request.metrics else 0
    pieces = request.max_tokens
    if request.endpoint is Endpoint.CHAT:
        pieces = 2 * request.max_tokens + CHAT_EXTRA
    return pieces + LOG_EXTRA + frames


@attrs.frozen
class ServiceFigures:
    """How the tasks completed lately were served: time to first token and speed over the
    SLO window, and the error of ``predicted_start_ms``."""

    slo: SloSnapshot
    predicted_start: Mapping[str, int | None]


@attrs.define
class QueueFigures:
    """What the Queue learned from the tasks it served, and the plans it makes from that."""

    rate: ServiceRate = attrs.field(factory=ServiceRate)
    work: WorkModel = attrs.field(factory=WorkModel)
    """How long a task holds a slot, for ``predicted_start_ms``."""
    prediction: PredictionErrors = attrs.field(factory=PredictionErrors)
    """How far each task's ``predicted_start_ms`` was from its real wait."""
    slo: SloWindow = attrs.field(factory=SloWindow)
    """Time to first token and decode speed of the tasks completed lately."""
    replica_slo: dict[str, SloWindow] = attrs.field(factory=dict)
    """The same, per replica (by id)."""
    replica_rate: dict[str, ServiceRate] = attrs.field(factory=dict)
    """How long a task holds a slot, per replica (by id): how fast each one is."""

    def dispatched(self, predicted_ms: int, waited_ms: int) -> None:
        """A task got a slot for the first time ``waited_ms`` after admission."""
        self.prediction.observe(predicted_ms, waited_ms)

    def completed(self, now: float, task: Task, done: Completed) -> float | None:
        """``task`` completed at ``now`` (it had held a slot since its first dispatch);
        its time to first token from admission, if it sent a token."""
        assert task.dispatched_at is not None
        ttft_s = None if done.first_token_at is None else done.first_token_at - task.submitted_at
        decode_s = done.decode_time_ms / 1000
        self.served(task.replica, now - task.dispatched_at)
        self.work.observe(
            prompt_s=done.prompt_time_ms / 1000,
            decode_s=decode_s,
            tokens_out=done.tokens_out,
            max_tokens=task.token_cap or task.request.max_tokens,
        )
        if ttft_s is not None:
            sample = Sample(now, ttft_s, done.tokens_out, decode_s)
            self.slo.observe(sample)
            if task.replica is not None:
                self.replica_slo.setdefault(task.replica, SloWindow()).observe(sample)
        return ttft_s

    def served(self, replica: str | None, hold_s: float) -> None:
        """A task held a slot of ``replica`` for ``hold_s`` seconds."""
        self.rate.observe(hold_s)
        if replica is not None:
            self.replica_rate.setdefault(replica, ServiceRate()).observe(hold_s)

    def effective_slots(self, ready: Mapping[str, int]) -> int:
        """The slots of the ready replicas (``ready``: id → slots), each weighed by how
        fast its tasks were served against the pool's mean: a replica whose tasks hold a
        slot half as long counts twice. One not measured yet counts as the mean; a pool of
        one replica counts its slots exactly. 0 when none is ready."""
        if not ready:
            return 0
        pool_s = self.rate.mean_service_s
        total = 0.0
        for replica, slots in ready.items():
            rate = self.replica_rate.get(replica)
            if rate is None or not rate.samples:
                total += slots
            else:
                total += slots * pool_s / max(rate.mean_service_s, 1e-6)
        return max(1, round(total))

    def predicted_start_ms(
        self, running: Iterable[Task], ahead: list[Task], slots: int, backlog: int
    ) -> int:
        """When a task behind ``ahead`` will be dispatched, given the ``running`` tasks (in
        dispatch order): :func:`~orchestra.scheduling.estimate.predicted_start_s`."""
        work = self.work
        running_left = [
            work.remaining_s(t.token_cap or t.request.max_tokens, t.log.tokens) for t in running
        ]
        waiting = [work.expected_s(t.request.max_tokens) for t in ahead]
        start_s = predicted_start_s(running_left, waiting, slots=slots, backlog=backlog)
        return round(start_s * 1000)

    def retry_ms(self, slots_total: int) -> int:
        """When a refused client should come back, from the observed service rate."""
        return self.rate.retry_after_ms(slots_total=slots_total)

    def tokens_per_s(self, now: float) -> float | None:
        """The decode speed of the tasks completed lately (None: none did)."""
        return self.slo.snapshot(now).tokens_per_s

    def snapshot(self, now: float) -> ServiceFigures:
        """The figures ``GET /v1/replicasets`` shows."""
        return ServiceFigures(self.slo.snapshot(now), self.prediction.snapshot())

    def replica_snapshot(self, replica: str, now: float) -> SloSnapshot:
        """Time to first token and speed of the tasks one replica completed lately."""
        return self.replica_slo.get(replica, SloWindow()).snapshot(now)
