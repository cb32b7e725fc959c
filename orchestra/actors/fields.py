"""The checks of request fields shared by the faces' parsers: each returns the value it
accepts or raises :class:`Problem` saying, in words a client can act on, what is wrong."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from orchestra.artifacts.model import kind_problem, normal_tags, tags_problem
from orchestra.errors import ErrorCode, OrchestraError, Refusal
from orchestra.task import KeepArtifact

MAX_STOP = 16
"""Stop strings a request may give."""
_NOT_UTF8 = "must be valid Unicode (it holds a lone surrogate)"


class Problem(OrchestraError):
    """One invalid field; gathered into a single INVALID_PARAMS answer (never raised out
    of a parser)."""


Check = Callable[[Any], Any]


def describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Problem(f"must be an integer (got {describe(value)})")
        if not low <= value <= high:
            raise Problem(f"must be between {low} and {high} (got {value})")
        return value

    return check


def number(low: float, high: float, *, low_open: bool = False) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Problem(f"must be a number (got {describe(value)})")
        number = float(value)
        too_low = number <= low if low_open else number < low
        if not math.isfinite(number) or too_low or number > high:
            bracket = "(" if low_open else "["
            raise Problem(f"must be in {bracket}{low}, {high}] (got {value})")
        return number

    return check


def string(*, max_len: int, pattern: re.Pattern[str] | None = None, empty: bool = True) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Problem(f"must be a string (got {describe(value)})")
        if not empty and not value:
            raise Problem("must not be empty")
        if len(value) > max_len:
            raise Problem(f"must be at most {max_len} characters (got {len(value)})")
        if pattern is not None and not pattern.fullmatch(value):
            raise Problem(
                "may hold only letters, digits and . _ : - (1 to 128 of them; not . or ..)"
            )
        return value

    return check


def choice(options: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise Problem(f"must be one of {', '.join(options)} (got {describe(value)})")
        return str(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Problem(f"must be true or false (got {describe(value)})")
    return value


def keep_artifact(value: Any) -> KeepArtifact:
    """A task's ``"artifact"``: ``{"kind": ..., "tags": [...]}``."""
    if not isinstance(value, dict):
        raise Problem(f'must be an object with "kind" and "tags" (got {describe(value)})')
    if unknown := sorted(set(value) - {"kind", "tags"}):
        raise Problem(f".{unknown[0]}: unknown field")
    if "kind" not in value:
        raise Problem(".kind: required")
    tags = value.get("tags", [])
    for name, problem in (("kind", kind_problem(value["kind"])), ("tags", tags_problem(tags))):
        if problem is not None:
            raise Problem(f".{name}: {problem}")
    return KeepArtifact(value["kind"], normal_tags(tags))


def stop_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise Problem(f"must be a list of non-empty strings (got {describe(value)})")
    if len(value) > MAX_STOP:
        raise Problem(f"must hold at most {MAX_STOP} strings (got {len(value)})")
    return tuple(value)


def surrogate_at(value: Any, where: str = "") -> str | None:
    """Where in ``value`` a string (or an object's key) holds a lone surrogate, which JSON
    can carry (``"\\ud800"``) but UTF-8, and so the engine, cannot: ``""`` for ``value``
    itself, else the path inside it (``[0].content``); None when there is none."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else where
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := surrogate_at(item, f"{where}[{i}]")) is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(key):
                return where
            if (found := surrogate_at(item, f"{where}.{key}")) is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def load_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or a refusal saying why it is not one."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal(ErrorCode.INVALID_PARAMS, f"body: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise Refusal(ErrorCode.INVALID_PARAMS, "body: must be a JSON object")
    return raw


@attrs.define
class Problems:
    """The problems found in one request, each naming its field: refused together."""

    lines: list[str] = attrs.field(factory=list)
    first: str | None = None
    """The field the first problem names (OpenAI's ``param``), its path included:
    ``messages[0].role``."""

    def add(self, name: str, text: str) -> None:
        """``name`` is wrong as ``text`` says; a ``text`` that starts with ``[`` or ``.``
        names where inside the value, before its ``": "``."""
        inner = text[:1] in ("[", ".")
        self.lines.append(f"{name}{'' if inner else ': '}{text}")
        if self.first is None:
            self.first = name + (text.partition(": ")[0] if inner else "")

    def __bool__(self) -> bool:
        return bool(self.lines)

    def refuse_if_any(self) -> None:
        """Raise one ``INVALID_PARAMS`` naming every problem, if there are any."""
        if self.lines:
            raise Refusal(
                ErrorCode.INVALID_PARAMS,
                "; ".join(self.lines),
                problems=tuple(self.lines),
                param=self.first,
            )


def checked(
    raw: Mapping[str, Any],
    checks: Mapping[str, Check],
    problems: Problems,
    *,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The values of ``raw`` that pass their ``checks``; a problem added per field that is
    unknown, missing or fails its check, or holds a lone surrogate anywhere inside it (the
    one place that is checked, for every face). A null is a field not given (as on the
    engine)."""
    values: dict[str, Any] = {}
    for name in sorted(raw):
        check = checks.get(name)
        if check is None:
            problems.add(name, "unknown field")
            continue
        if raw[name] is None:
            continue
        if (where := surrogate_at(raw[name])) is not None:
            problems.add(name, f"{where}{': ' if where else ''}{_NOT_UTF8}")
            continue
        try:
            values[name] = check(raw[name])
        except Problem as exc:
            problems.add(name, str(exc))
    for name in required:
        if raw.get(name) is None:
            problems.add(name, "required")
    return values
