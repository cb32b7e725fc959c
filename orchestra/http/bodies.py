"""Small pieces the route modules share: JSON responses and strict JSON bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from quart import Response, request

from orchestra.errors import ErrorCode, Refusal


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


def read_json_object(
    raw: bytes,
    checks: Mapping[str, Callable[[Any], str | None]],
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A request body as a JSON object whose fields all pass their ``checks``.

    An empty body is an empty object. Raises Refusal ``INVALID_PARAMS`` with one problem
    per bad field (unknown, missing, or failing its check), each naming the field.
    """
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refusal(ErrorCode.INVALID_PARAMS, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refusal(ErrorCode.INVALID_PARAMS, "the body must be a JSON object")
    problems = [f"{name}: unknown field" for name in data if name not in checks]
    problems += [f"{name}: required" for name in required if name not in data]
    for name, value in data.items():
        if name in checks and (problem := checks[name](value)) is not None:
            problems.append(f"{name}: {problem}")
    if problems:
        raise Refusal(ErrorCode.INVALID_PARAMS, "; ".join(problems), problems=tuple(problems))
    return data


Check = Callable[[Any], str | None]
"""A field's check: None when the value is good, else what is wrong with it."""


def string(value: Any) -> str | None:
    """A non-empty string."""
    return None if isinstance(value, str) and value else "must be a non-empty string"


def optional_string(value: Any) -> str | None:
    """A non-empty string, or null."""
    return None if value is None else string(value)


async def read_body(checks: Mapping[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The current request's body, read whole, as :func:`read_json_object` checks it."""
    raw = await request.get_data(cache=False)
    assert isinstance(raw, bytes)
    return read_json_object(raw, checks, required)


def query_args(allowed: Mapping[str, Any]) -> dict[str, str]:
    """The request's query arguments, each checked by ``allowed[name]`` (a problem or
    None); one INVALID_PARAMS naming every bad or unknown one."""
    given = {name: request.args.get(name, "") for name in request.args}
    problems = [f"{name}: unknown query parameter" for name in given if name not in allowed]
    problems += [
        f"{name}: {problem}"
        for name, value in given.items()
        if name in allowed and (problem := allowed[name](value)) is not None
    ]
    if problems:
        raise Refusal(ErrorCode.INVALID_PARAMS, "; ".join(problems), problems=tuple(problems))
    return given


def count_check(most: int) -> Callable[[str], str | None]:
    """A query argument's check: an integer from 1 to ``most`` in decimal digits (no more
    digits than ``most`` has, so a huge one is refused before ``int`` reads it)."""

    def problem(value: str) -> str | None:
        digits = value.isascii() and value.isdigit() and len(value) <= len(str(most))
        return (
            None if digits and 1 <= int(value) <= most else f"must be an integer from 1 to {most}"
        )

    return problem


def flag_problem(value: str) -> str | None:
    """The problem with a query flag's value (``true|false|1|0``), or None."""
    return None if value in ("true", "false", "1", "0") else "must be true or false"
