"""The SDK's one cattrs converter, and the parsing built on it.

:data:`converter` turns the classes of :mod:`orchestra.sdk._models` and
:mod:`orchestra.sdk._events` into and out of the JSON of ``specs/openapi/*.yaml``. Reading
is tolerant of fields a newer server adds (they are ignored) and strict about the ones this
version knows: a missing or mistyped field is a :class:`~orchestra.sdk.ParseError`, never
a half-filled object.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from orchestra.errors import ErrorCode
from orchestra.sdk._errors import ParseError
from orchestra.sdk._events import End, Error, Event, Metrics, Started, Token
from orchestra.sdk._models import TaskRequest
from orchestra.task import Determinism, Priority, TaskState

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=False)
"""The one converter of the SDK (wire JSON <-> the classes of ``_models`` and ``_events``)."""


def _structure_strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _structure_strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _structure_strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _structure_strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _structure_mapping(value: Any, _: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _structure_floats(value: Any, _: Any) -> tuple[float, ...]:
    """A list of numbers (an embedding: thousands of them) in one pass, not one hook each."""
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    if not all(type(item) is float or type(item) is int for item in value):
        raise TypeError("expected an array of numbers")
    return tuple(map(float, value))


def _structure_strs(value: Any, _: Any) -> tuple[str, ...]:
    """A list of strings; a string is not one (cattrs would split it into characters)."""
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    if not all(isinstance(item, str) for item in value):
        raise TypeError("expected an array of strings")
    return tuple(value)


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return cls(value)


converter.register_structure_hook(str, _structure_strict_str)
for _enum in (ErrorCode, TaskState, Priority, Determinism):
    # each by name: a StrEnum is also a str, whose hook singledispatch would pick first
    converter.register_structure_hook(_enum, _structure_enum)
converter.register_structure_hook(int, _structure_strict_int)
converter.register_structure_hook(float, _structure_strict_float)
converter.register_structure_hook(bool, _structure_strict_bool)
converter.register_structure_hook_func(
    lambda t: t in (Mapping[str, Any], Mapping[str, float | None]), _structure_mapping
)
converter.register_structure_hook_func(lambda t: t == tuple[float, ...], _structure_floats)
converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_strs)
converter.register_structure_hook(
    Token,
    make_dict_structure_fn(Token, converter, text=override(rename="t"), index=override(rename="i")),
)
converter.register_unstructure_hook(
    TaskRequest, make_dict_unstructure_fn(TaskRequest, converter, _cattrs_omit_if_default=True)
)


def structure(data: Any, cls: type[T], *, what: str, status: int | None = None) -> T:
    """``data`` as a ``cls``; raises :class:`ParseError` naming every bad field."""
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises a (class validation) group or a plain error
        if isinstance(exc, cattrs.BaseValidationError):
            problems = cattrs.transform_error(exc, path="$")
        else:
            problems = [str(exc)]
        message = f"{what}: not the contract's shape: {'; '.join(problems)}"
        raise ParseError(message, status) from exc


def request_body(request: TaskRequest) -> dict[str, Any]:
    """The JSON body of a submission: every field that is not None."""
    body: dict[str, Any] = converter.unstructure(request)
    return body


_EVENT_CLASSES: Mapping[str, type[Event]] = {
    "started": Started,
    "token": Token,
    "end": End,
    "error": Error,
}


def event_from_wire(event_id: int, kind: str, data: Any) -> Event | None:
    """The typed event for one SSE frame; None for an event kind this SDK does not know
    (a newer server's; a client skips it, as the contract asks)."""
    if kind == "metrics":
        values = structure(data, Mapping[str, float | None], what="metrics event")  # type: ignore[type-abstract]
        return Metrics(id=event_id, values=values)
    cls = _EVENT_CLASSES.get(kind)
    if cls is None:
        return None
    if not isinstance(data, dict):
        raise ParseError(f"{kind} event {event_id}: data is not a JSON object")
    return structure({**data, "id": event_id}, cls, what=f"{kind} event {event_id}")
