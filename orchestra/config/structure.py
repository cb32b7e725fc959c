"""Strict structuring of TOML documents (DESIGN §3), and its problems as lines.

:data:`converter` (one cattrs converter) structures a parsed TOML document into the
classes of :mod:`orchestra.config.tables`. Nothing is coerced: its hooks for ``int``,
``float``, ``bool``, ``str``, ``tuple[str, ...]`` and ``tuple[int, ...]`` take only values
of that very type, unknown keys are refused, and :func:`field_hook` runs a field's per-key
check (its ``metadata={CHECK: ...}``) right after the type check, so cattrs' detailed
validation reports it with its path beside every other problem. :func:`problem_lines`
turns the error cattrs raises into one ``key.path: problem`` line per problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception

from orchestra.config.checks import CHECK, Check, show

T = TypeVar("T")

converter: Final = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
"""Structures TOML documents into the table classes; strict about types and unknown keys."""


def _strict(kind: str, accept: Callable[[Any], bool], make: Callable[[Any], T]) -> Any:
    def hook(value: Any, _: Any) -> T:
        if not accept(value):
            raise TypeError(f"expected {kind} (got {show(value)})")
        return make(value)

    return hook


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _structure_float(value: Any, _: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number (got {show(value)})")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {show(value)})")
    return float(value)


def _structure_str_tuple(value: Any, _: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an array of strings (got {show(value)})")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"expected an array of strings (got {show(item)} at index {index})")
    return tuple(value)


def _structure_int_tuple(value: Any, _: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an array of integers (got {show(value)})")
    for index, item in enumerate(value):
        if not _is_int(item):
            raise TypeError(f"expected an array of integers (got {show(item)} at index {index})")
    return tuple(value)


converter.register_structure_hook(int, _strict("an integer", _is_int, int))
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(
    bool, _strict("true or false", lambda v: v is True or v is False, bool)
)
converter.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str), str))
converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
converter.register_structure_hook_func(lambda t: t == tuple[int, ...], _structure_int_tuple)


def _checked(base: Callable[[Any, Any], Any], check: Check) -> Callable[[Any, Any], Any]:
    """``base`` (the type's hook), then the field's own check on the value as written."""

    def hook(value: Any, type_: Any) -> Any:
        result = base(value, type_)
        problem = check(value)
        if problem is not None:
            raise ValueError(problem)
        return result

    return hook


def field_hook(field: attrs.Attribute[Any]) -> Callable[[Any, Any], Any]:
    base = converter.get_structure_hook(field.type)
    check: Check | None = field.metadata.get(CHECK)
    return base if check is None else _checked(base, check)


def _table_hook(cls: type[T]) -> Callable[[Any, Any], T]:
    """Structure an attrs class from a TOML table: strict keys, then each field's hook."""
    attrs_cls: Any = cls
    attrs.resolve_types(attrs_cls)
    overrides: dict[str, Any] = {
        field.name: override(struct_hook=field_hook(field))
        for field in attrs.fields(attrs_cls)
        if CHECK in field.metadata
    }
    inner = make_dict_structure_fn(cls, converter, **overrides)

    def hook(value: Any, _: Any) -> T:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table (got {show(value)})")
        return inner(value, cls)

    return hook


converter.register_structure_hook_factory(attrs.has, _table_hook)


# -- messages ---------------------------------------------------------------------------------

_UNKNOWN_KEYS: Final = "\x00unknown keys:"
"""Marks :func:`_describe`'s rendering of extra keys, which :func:`problem_lines` expands."""


def _describe(exc: BaseException, type_: Any) -> str:
    """The ``format_exception`` for :func:`cattrs.transform_error`."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return _UNKNOWN_KEYS + json.dumps(sorted(str(key) for key in exc.extra_fields))
    if isinstance(exc, KeyError):
        return "required"
    if isinstance(exc, ValueError | TypeError) and exc.args:
        return str(exc)
    return format_exception(exc, type_)


def _key(name: str) -> str:
    """A key as TOML would write it inside a dotted path."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _dotted(path: str) -> str:
    """``$.admission.queue_capacity`` → ``admission.queue_capacity``; a table's key
    (``$.models['a'].path``) as TOML writes it (``models.a.path``)."""
    path = re.sub(r"\['([^']*)'\]", lambda m: "." + _key(m[1]), path)
    return path.removeprefix("$").removeprefix(".")


def problem_lines(exc: BaseException) -> list[str]:
    """One line per problem from a cattrs structuring error."""
    lines: list[str] = []
    for line in cattrs.transform_error(exc, format_exception=_describe):
        description, _, path = line.rpartition(" @ ")
        where = _dotted(path)
        if description.startswith(_UNKNOWN_KEYS):
            keys: list[str] = json.loads(description.removeprefix(_UNKNOWN_KEYS))
            prefix = f"{where}." if where else ""
            lines += [f"{prefix}{_key(key)}: unknown key" for key in keys]
        else:
            lines.append(f"{where or 'config'}: {' '.join(description.splitlines())}")
    return lines
