"""The output of the client commands: stdout writes, the queue-position line, JSON of the
SDK's typed objects and events, and the human-readable answers of ``status``, ``cancel``,
``tasks``, ``health``, ``caps``, ``models``, ``ps``, ``load``, ``unload``, ``drain`` and
``resume``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from orchestra.sdk import (
    Capabilities,
    CatalogModel,
    DrainResult,
    End,
    Error,
    Event,
    ResumeResult,
    Started,
    TaskState,
    TaskSummary,
    Token,
    UnloadedModel,
)
from orchestra.sdk._convert import converter


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def queued(position: int, predicted_start_ms: int | None) -> str:
    when = "unknown" if predicted_start_ms is None else f"{predicted_start_ms} ms"
    return f"queued at position {position}, predicted start in {when}"


def as_json(value: Any) -> str:
    return json.dumps(converter.unstructure(value))


_EVENT_NAMES: Final[Mapping[type, str]] = {
    Started: "started",
    Token: "token",
    End: "end",
    Error: "error",
}


def json_event(event: Event) -> str:
    data = converter.unstructure(event)
    return json.dumps({"event": _EVENT_NAMES.get(type(event), "metrics"), **data})


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def field_lines(answer: Any) -> str:
    """An attrs object as ``name: value`` lines."""
    return "".join(
        f"{field.name}: {_value(getattr(answer, field.name))}\n"
        for field in attrs.fields(type(answer))
    )


def capability_lines(caps: Capabilities) -> str:
    lines = [f"api_version: {caps.api_version}", f"orchestra_version: {caps.orchestra_version}"]
    lines += [f"engine: {e.engine} {_value(e.engine_version)} ({e.mode})" for e in caps.engines]
    lines += [
        f"model: {_value(m.id)} digest {_value(m.digest)} ctx_max {_value(m.ctx_max)}"
        for m in caps.models
    ]
    lines += [
        f"pool {p.id}: {p.state}, slots {p.slots_busy}/{p.slots_total} busy, queue {p.queue_depth}"
        for p in caps.pools
    ]
    limits = caps.limits
    lines.append(
        f"limits: queue_capacity {limits.queue_capacity}, max_tokens {limits.max_tokens}, "
        f"ctx_limit {limits.ctx_limit}"
    )
    on = sorted(name for name, value in caps.features.items() if value is True)
    other = sorted(
        f"{name}={json.dumps(value)}"
        for name, value in caps.features.items()
        if not isinstance(value, bool)
    )
    lines.append(f"features: {', '.join([*on, *other]) or '-'}")
    return "".join(line + "\n" for line in lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell (the last one not padded)."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "".join(
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]
        ).rstrip()
        + "\n"
        for line in lines
    )


def model_table(answer: Mapping[str, Any], now: datetime | None = None) -> str:
    """``orchestra models``: one row per model of ``answer["data"]`` (``GET /v1/models``):
    its id (``*`` the default model), aliases, residency, memory (``~`` estimated), pool
    and when it was last used; then why each failed load failed."""
    models: Sequence[CatalogModel] = answer["data"]
    if not models:
        return "no models in the catalog\n"
    header = ("ID", "ALIASES", "RESIDENCY", "MEMORY", "POOL", "LAST USED")
    rows = [
        (
            m.id + ("*" if m.default else ""),
            ",".join(m.aliases) or "-",
            residency(m),
            memory(m),
            _value(m.pool),
            ago(m.last_used, now),
        )
        for m in models
    ]
    notes = [f"{m.id}: load failed: {m.error}\n" for m in models if m.error is not None]
    if any(m.default for m in models):
        notes.append("* the default model\n")
    return table(header, rows) + "".join(notes)


def ps_table(answer: Mapping[str, Any]) -> str:
    """``orchestra ps``: the models of ``answer["data"]`` loaded or loading: memory, tasks
    running and waiting, how long idle, until when (the idle unload), pool."""
    models: Sequence[CatalogModel] = answer["data"]
    if not models:
        return "no model loaded\n"
    header = ("ID", "STATE", "MEMORY", "RUNNING", "WAITING", "IDLE", "UNTIL", "POOL")
    rows = [
        (
            m.id,
            residency(m),
            memory(m),
            str(m.running),
            str(m.waiting),
            "-" if m.idle_s is None else duration(m.idle_s),
            until(m),
            _value(m.pool),
        )
        for m in models
    ]
    return table(header, rows)


def task_table(answer: Mapping[str, Any]) -> str:
    """``orchestra tasks``: one row per task of ``answer["tasks"]`` (``GET /v1/tasks``): id,
    pool, state, priority, tokens sent of ``max_tokens``, age, then for a waiting task its
    predicted start and place in line (``in 1.0s #0``), for another its run time, and its
    error code; then each failed task's error message."""
    tasks: Sequence[TaskSummary] = answer["tasks"]
    if not tasks:
        return "no tasks\n"
    header = ("TASK", "POOL", "STATE", "PRIORITY", "TOKENS", "AGE", "START/RUN", "ERROR")
    rows = [
        (
            t.task_id,
            t.pool,
            str(t.state),
            str(t.priority),
            f"{t.tokens_out}/{t.max_tokens}",
            ms_duration(t.age_ms),
            start_or_run(t),
            _value(t.error_code),
        )
        for t in tasks
    ]
    notes = [
        f"{t.task_id}: {t.error_code}: {t.error_message}\n"
        for t in tasks
        if t.error_message is not None
    ]
    return table(header, rows) + "".join(notes)


def start_or_run(task: TaskSummary) -> str:
    """A waiting task's predicted start and place in line (``in 1.0s #0``); another's run
    time so far (or in all, once ended); ``-`` when it has neither."""
    if task.state is TaskState.QUEUED:
        when = (
            "-" if task.predicted_start_ms is None else "in " + ms_duration(task.predicted_start_ms)
        )
        place = "" if task.queue_position is None else f" #{task.queue_position}"
        return when + place
    return "-" if task.run_ms is None else ms_duration(task.run_ms)


def ms_duration(ms: int) -> str:
    """``410ms``, ``1.2s``, then as :func:`duration` (``4m05s``)."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    if ms < 59_950:
        return f"{ms / 1000:.1f}s"
    return duration(ms / 1000)


def drained_line(drained: DrainResult) -> str:
    """``orchestra drain``'s answer: what became of the tasks, and how long it took."""
    return (
        f"{drained.pool_id} drained in {ms_duration(drained.waited_ms)}: "
        f"{drained.finished} finished, {drained.cancelled} cancelled, "
        f"{drained.requeued} requeued, {drained.queued} waiting\n"
    )


def resumed_line(resumed: ResumeResult) -> str:
    """``orchestra resume``'s answer: the pool's state now."""
    return f"{resumed.pool_id} {resumed.state}\n"


def residency(model: CatalogModel) -> str:
    """Its residency; from an older server (none said), what ``loaded`` says."""
    if model.residency is not None:
        return model.residency
    return "loaded" if model.loaded else "unloaded"


def resident(model: CatalogModel) -> bool:
    """Whether ``orchestra ps`` shows it: loaded, or being loaded."""
    return residency(model) in ("loaded", "loading")


def loaded_line(model: CatalogModel, elapsed_s: float) -> str:
    """``orchestra load``'s answer: the model, its load time (the server's, else how long
    the call took), memory and pool."""
    took = elapsed_s if model.load_ms is None else model.load_ms / 1000
    what = [f"memory {memory(model)}"] if model.memory_mb is not None else []
    what += [f"pool {model.pool}"] if model.pool is not None else []
    detail = f" ({', '.join(what)})" if what else ""
    return f"{model.id} {residency(model)} in {took:.1f} s{detail}\n"


def unloaded_line(model: UnloadedModel) -> str:
    """``orchestra unload``'s answer."""
    tasks = "task" if model.cancelled == 1 else "tasks"
    cancelled = f", {model.cancelled} {tasks} cancelled" if model.cancelled else ""
    return f"{model.id} {residency(model)}{cancelled}\n"


def memory(model: CatalogModel) -> str:
    """Its memory, ``~`` before an estimate; ``-`` when not known."""
    if model.memory_mb is None:
        return "-"
    mib = model.memory_mb
    shown = f"{mib} MiB" if mib < 1024 else f"{mib / 1024:.1f} GiB"
    return ("~" if model.memory_source == "estimated" else "") + shown


def duration(seconds: float) -> str:
    """``42s``, ``4m05s``, ``2h07m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def until(model: CatalogModel) -> str:
    """When an idle model is unloaded: ``kept`` (``keep_loaded``), ``never`` (no idle
    unload), in how long, or ``-`` (busy, loading, or the server did not say)."""
    if model.keep_loaded:
        return "kept"
    if model.idle_unload_s == 0:
        return "never"
    if model.idle_unload_s is None or model.idle_s is None or residency(model) != "loaded":
        return "-"
    return "in " + duration(max(0.0, model.idle_unload_s - model.idle_s))


def ago(rfc3339: str | None, now: datetime | None = None) -> str:
    """``3m05s ago`` for an RFC 3339 time (as it is, if it is not one); ``-`` for None."""
    if rfc3339 is None:
        return "-"
    try:
        then = datetime.fromisoformat(rfc3339)
    except ValueError:
        return rfc3339
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return duration(((now or datetime.now(UTC)) - then).total_seconds()) + " ago"
