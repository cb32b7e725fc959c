"""Admission: turns a ``POST /v1/tasks`` body into an admitted task or a precise refusal.

Admission is the first actor a task meets. It runs in the HTTP handler's own task (so it
can answer 202 / 4xx / 429 synchronously and never queues work of its own), owns nothing
but its counters, and hands every accepted request to the Queue with a non-blocking send.
Under cancellation (the client went away) it leaves nothing half-done: either the Queue
received the task or it did not.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from orchestra.config import AdmissionConfig
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.task import Determinism, Priority, TaskRequest
from orchestra.views import AdmissionStatistics

if TYPE_CHECKING:
    from orchestra.actors.queue_messages import Admitted

SEED_MAX = 2**32 - 1
_ID_RE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._:-]{1,128}")
"""Task and session ids (used with ``fullmatch``): not ``.`` or ``..``, which a URL path
cannot carry."""
_MAX_STOP = 16


class TokenCounter(Protocol):
    """What Admission needs from the engine: the prompt's length in tokens."""

    async def count_tokens(self, text: str) -> int: ...


class TaskSubmitter(Protocol):
    """What Admission needs from the Queue."""

    async def submit(self, request: TaskRequest, fingerprint: str) -> Admitted: ...


class _Problem(Exception):
    """One invalid field; gathered into a single INVALID_PARAMS answer."""


Check = Callable[[Any], Any]


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Problem(f"must be an integer (got {_describe(value)})")
        if not low <= value <= high:
            raise _Problem(f"must be between {low} and {high} (got {value})")
        return value

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Problem(f"must be a number (got {_describe(value)})")
        number = float(value)
        too_low = number <= low if low_open else number < low
        if not math.isfinite(number) or too_low or number > high:
            bracket = "(" if low_open else "["
            raise _Problem(f"must be in {bracket}{low}, {high}] (got {value})")
        return number

    return check


def _string(*, max_len: int, pattern: re.Pattern[str] | None = None, empty: bool = True) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Problem(f"must be a string (got {_describe(value)})")
        if not empty and not value:
            raise _Problem("must not be empty")
        if len(value) > max_len:
            raise _Problem(f"must be at most {max_len} characters (got {len(value)})")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Problem("must be valid Unicode (it holds a lone surrogate)") from None
        if pattern is not None and not pattern.fullmatch(value):
            raise _Problem(
                "may hold only letters, digits and . _ : - (1 to 128 of them; not . or ..)"
            )
        return value

    return check


def _choice(options: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise _Problem(f"must be one of {', '.join(options)} (got {_describe(value)})")
        return str(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"must be true or false (got {_describe(value)})")
    return value


def _stop_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise _Problem(f"must be a list of non-empty strings (got {_describe(value)})")
    if len(value) > _MAX_STOP:
        raise _Problem(f"must hold at most {_MAX_STOP} strings (got {len(value)})")
    return tuple(value)


def _fields(limits: AdmissionConfig) -> Mapping[str, Check]:
    return {
        "prompt": _string(max_len=4 * 1024 * 1024, empty=False),
        "max_tokens": _integer(1, limits.max_tokens_limit),
        "task_id": _string(max_len=128, pattern=_ID_RE),
        "session_id": _string(max_len=128, pattern=_ID_RE),
        "seed": _integer(0, SEED_MAX),
        "temperature": _number(0.0, 10.0),
        "top_p": _number(0.0, 1.0, low_open=True),
        "top_k": _integer(0, 1_000_000),
        "min_p": _number(0.0, 1.0),
        "repeat_penalty": _number(0.0, 10.0),
        "stop": _stop_list,
        "priority": _choice(tuple(p.value for p in Priority)),
        "deadline_ms": _integer(1, 7 * 24 * 3600 * 1000),
        "determinism": _choice(tuple(d.value for d in Determinism)),
        "model_ref": _string(max_len=512, empty=False),
        "engine": _choice(("llamacpp",)),
        "ctx": _integer(1, limits.ctx_limit),
        "workload": _string(max_len=128),
        "sampler_profile_version": _string(max_len=128),
        "kv_hint": _string(max_len=128),
        "metrics": _boolean,
    }


def default_max_tokens(limits: AdmissionConfig) -> int:
    """``max_tokens`` when a request leaves it out."""
    return min(256, limits.max_tokens_limit)


def parse_task_request(body: bytes, limits: AdmissionConfig) -> TaskRequest:
    """Validate a request body; raise one ``INVALID_PARAMS`` naming every bad field."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal(ErrorCode.INVALID_PARAMS, f"body: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise Refusal(ErrorCode.INVALID_PARAMS, "body: must be a JSON object")
    fields = _fields(limits)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name in sorted(raw):
        check = fields.get(name)
        if check is None:
            problems.append(f"{name}: unknown field")
            continue
        if raw[name] is None:  # null means "not given", as on the engine
            continue
        try:
            values[name] = check(raw[name])
        except _Problem as exc:
            problems.append(f"{name}: {exc}")
    if "prompt" not in values and not any(p.startswith("prompt:") for p in problems):
        problems.append("prompt: required")
    if problems:
        raise Refusal(ErrorCode.INVALID_PARAMS, "; ".join(problems), problems=tuple(problems))
    values.setdefault("max_tokens", default_max_tokens(limits))
    if "priority" in values:
        values["priority"] = Priority(values["priority"])
    if "determinism" in values:
        values["determinism"] = Determinism(values["determinism"])
    return TaskRequest(**values)


def fingerprint(request: TaskRequest) -> str:
    """A stable hash of everything the request asks for except its id."""
    fields = attrs.asdict(request, filter=lambda a, _: a.name != "task_id")
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _prompt_token_bound(prompt: str) -> int:
    """An upper bound on the prompt's token count without asking the engine.

    Every token of a llama.cpp vocabulary (BPE or SentencePiece with byte fallback) covers
    at least one byte of text; +2 covers a BOS token and a SentencePiece space prefix.
    """
    return len(prompt.encode()) + 2


@attrs.define
class Admission:
    """Validates and guards task submissions, then hands them to the Queue.

    Owns: its counters. Receives: raw request bodies from the HTTP face. Promises: every
    refusal names each bad field; a prompt that may not fit the context is measured with
    the engine's ``/tokenize``; a full queue is answered at once (429), never waited on.
    """

    limits: AdmissionConfig
    tokens: TokenCounter
    queue: TaskSubmitter
    _admitted: int = attrs.field(default=0, init=False)
    _rejected: Counter[str] = attrs.field(factory=Counter, init=False)

    async def admit(self, body: bytes) -> Admitted:
        """Admit a task or raise :class:`Refusal` saying why not."""
        try:
            request = parse_task_request(body, self.limits)
            await self._check_context(request)
            admitted = await self.queue.submit(request, fingerprint(request))
        except Refusal as exc:
            self._rejected[exc.code] += 1
            raise
        self._admitted += 1
        return admitted

    async def _check_context(self, request: TaskRequest) -> None:
        limit = self.limits.ctx_limit
        if _prompt_token_bound(request.prompt) + request.max_tokens <= limit:
            return
        try:
            prompt_tokens = await self.tokens.count_tokens(request.prompt)
        except EngineError as exc:
            raise Refusal(
                ErrorCode.POOL_UNREADY,
                f"cannot measure the prompt: {exc.message}",
                retriable=True,
                retry_after_ms=1000,
            ) from exc
        if prompt_tokens + request.max_tokens > limit:
            raise Refusal(
                ErrorCode.CTX_LIMIT_EXCEEDED,
                f"prompt ({prompt_tokens} tokens) + max_tokens ({request.max_tokens}) exceeds "
                f"the context limit ({limit} tokens)",
            )

    def statistics(self) -> AdmissionStatistics:
        """Counts of admitted tasks and of refusals by error code."""
        return AdmissionStatistics(admitted=self._admitted, rejected=dict(self._rejected))
