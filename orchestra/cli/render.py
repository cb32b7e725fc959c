"""The output of the client commands: stdout writes, the queue-position line, JSON of the
SDK's typed objects and events, and the human-readable answers of ``status``, ``cancel``,
``health``, ``caps`` and ``models``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from orchestra.sdk import Capabilities, CatalogModel, End, Error, Event, Started, Token
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


def model_table(answer: Mapping[str, Any]) -> str:
    """``orchestra models``: one row per model of ``answer["data"]`` (``GET /v1/models``)."""
    models: Sequence[CatalogModel] = answer["data"]
    if not models:
        return "no models in the catalog\n"
    header = ("ID", "LOADED", "CONTEXT", "TRUST", "STATE", "SIZE", "PATH")
    rows = [header] + [
        (
            m.id,
            _value(m.loaded),
            _value(m.context),
            m.trust_state,
            m.state,
            _size(m.size_bytes),
            m.path,
        )
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) + "\n"
        for row in rows
    )


def _size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
