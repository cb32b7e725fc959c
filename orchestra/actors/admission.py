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
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import attrs

from orchestra.actors import fields
from orchestra.config import AdmissionConfig
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.task import Chat, Determinism, Embed, Face, Priority, TaskRequest
from orchestra.views import AdmissionStatistics

if TYPE_CHECKING:
    from orchestra.actors.queue_messages import Admitted

SEED_MAX = 2**32 - 1
ID_RE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._:-]{1,128}")
"""Task and session ids (used with ``fullmatch``): not ``.`` or ``..``, which a URL path
cannot carry."""
fields.MAX_STOP = 16


class TokenCounter(Protocol):
    """What Admission needs from the engine: the prompt's length in tokens (a chat's
    prompt is rendered by the engine's chat template first)."""

    async def count_tokens(self, text: str) -> int: ...

    async def render_chat(self, params: Mapping[str, Any]) -> str: ...


class TaskSubmitter(Protocol):
    """What Admission needs from the Queue."""

    async def submit(self, request: TaskRequest, fingerprint: str) -> Admitted: ...


class Route(Protocol):
    """Where a task goes: a pool's id, its engine (to count tokens) and its Queue."""

    @property
    def id(self) -> str: ...

    @property
    def engine(self) -> TokenCounter: ...

    @property
    def queue(self) -> TaskSubmitter: ...

    def engine_ready(self) -> bool:
        """The engine is loaded and answers (so it can count a prompt's tokens)."""
        ...


class Router(Protocol):
    """What Admission needs from the Models actor: the pool a request's model names."""

    def route(self, name: str | None) -> Route:
        """Raises Refusal ``NOT_FOUND`` or ``MODEL_TOO_LARGE``."""
        ...


@attrs.frozen
class OnePool:
    """A router with one pool, which every model name reaches (for tests and tools)."""

    engine: TokenCounter
    queue: TaskSubmitter
    id: str = "default"

    def engine_ready(self) -> bool:
        return True

    def route(self, name: str | None) -> OnePool:
        return self


def _fields(limits: AdmissionConfig) -> Mapping[str, fields.Check]:
    return {
        "prompt": fields.string(max_len=4 * 1024 * 1024, empty=False),
        "max_tokens": fields.integer(1, limits.max_tokens_limit),
        "task_id": fields.string(max_len=128, pattern=ID_RE),
        "session_id": fields.string(max_len=128, pattern=ID_RE),
        "seed": fields.integer(0, SEED_MAX),
        "temperature": fields.number(0.0, 10.0),
        "top_p": fields.number(0.0, 1.0, low_open=True),
        "top_k": fields.integer(0, 1_000_000),
        "min_p": fields.number(0.0, 1.0),
        "repeat_penalty": fields.number(0.0, 10.0),
        "stop": fields.stop_list,
        "priority": fields.choice(tuple(p.value for p in Priority)),
        "deadline_ms": fields.integer(1, 7 * 24 * 3600 * 1000),
        "determinism": fields.choice(tuple(d.value for d in Determinism)),
        "model_ref": fields.string(max_len=512, empty=False),
        "engine": fields.choice(("llamacpp",)),
        "ctx": fields.integer(1, limits.ctx_limit),
        "workload": fields.string(max_len=128),
        "sampler_profile_version": fields.string(max_len=128),
        "kv_hint": fields.string(max_len=128),
        "metrics": fields.boolean,
        "artifact": fields.keep_artifact,
    }


def default_max_tokens(limits: AdmissionConfig) -> int:
    """``max_tokens`` when a request leaves it out."""
    return min(256, limits.max_tokens_limit)


def parse_task_request(body: bytes, limits: AdmissionConfig) -> TaskRequest:
    """Validate a request body; raise one ``INVALID_PARAMS`` naming every bad field."""
    raw = fields.load_object(body)
    problems = fields.Problems()
    values = fields.checked(raw, _fields(limits), problems, required=("prompt",))
    problems.refuse_if_any()
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


_TEMPLATE_ALLOWANCE = 64
"""Tokens a chat template may add beyond the JSON of the messages (markers are fewer
tokens than the JSON's keys; this covers a default system prompt the template inserts)."""
_TOOLS_ALLOWANCE = 1024
"""Tokens a chat template may add when tools are offered (instructions on calling them)."""


def _prompt_token_bound(prompt: str | Chat | Embed) -> int:
    """An upper bound on the prompt's token count without asking the engine.

    Every token of a llama.cpp vocabulary (BPE or SentencePiece with byte fallback) covers
    at least one byte of text; +2 covers a BOS token and a SentencePiece space prefix. A
    chat's messages are bounded by their JSON and the template's allowance.
    """
    if isinstance(prompt, str):
        return len(prompt.encode()) + 2
    if isinstance(prompt, Embed):
        return 0  # each text is bounded by the engine's batch, which refuses a longer one
    text = json.dumps([prompt.messages, prompt.tools], ensure_ascii=False)
    allowance = _TEMPLATE_ALLOWANCE + (_TOOLS_ALLOWANCE if prompt.tools else 0)
    return len(text.encode()) + 2 + allowance


class Parsed(Protocol):
    """What a face's parser makes of a request body: the task, and whether its
    ``max_tokens`` was left out (then it is lowered to what fits the context, rather than
    refused)."""

    @property
    def task(self) -> TaskRequest: ...

    @property
    def fit_max_tokens(self) -> bool: ...

    def with_task(self, task: TaskRequest) -> Self:
        """The same request with ``task`` (as Admission fitted it) instead."""
        ...


@attrs.frozen
class V1Request:
    """A ``POST /v1/tasks`` body, parsed."""

    task: TaskRequest
    fit_max_tokens: bool = False

    def with_task(self, task: TaskRequest) -> V1Request:
        return attrs.evolve(self, task=task)


P = TypeVar("P", bound=Parsed)


@attrs.define
class Admission:
    """Validates and guards task submissions, then hands them to the Queue.

    Owns: its counters. Receives: raw request bodies from the HTTP face. Promises: every
    refusal names each bad field; a prompt that may not fit the context is measured with
    the engine's ``/tokenize``; a full queue is answered at once (429), never waited on.
    """

    limits: AdmissionConfig
    router: Router
    _admitted: Counter[tuple[str, str]] = attrs.field(factory=Counter, init=False)
    _rejected: Counter[tuple[str, str, str]] = attrs.field(factory=Counter, init=False)

    async def admit(self, body: bytes) -> Admitted:
        """Admit a ``POST /v1/tasks`` body or raise :class:`Refusal` saying why not."""
        _, admitted, _ = await self.admit_with(
            lambda: V1Request(parse_task_request(body, self.limits)), Face.V1
        )
        return admitted

    async def admit_with(self, parse: Callable[[], P], face: Face) -> tuple[P, Admitted, Route]:
        """Admit what ``parse`` makes of a request that came in through ``face``, or raise
        :class:`Refusal` saying why not. Returns the parsed request (with the task as
        admitted), the Queue's answer and the pool it went to (its task's ``model_ref``
        names it; none: the default model)."""
        pool_id = ""
        try:
            parsed = parse()
            route = self._route(parsed.task.model_ref, face)
            pool_id = route.id
            request = await self._fit_context(route, parsed.task, fit=parsed.fit_max_tokens)
            # Only a client's own task id can meet an earlier task: only then is the
            # fingerprint compared (and worth computing).
            mark = "" if request.task_id is None else fingerprint(request)
            admitted = await route.queue.submit(request, mark)
        except Refusal as exc:
            self._rejected[str(face), str(exc.code), pool_id] += 1
            raise
        self._admitted[str(face), pool_id] += 1
        return parsed.with_task(request), admitted, route

    def _route(self, name: str | None, face: Face) -> Route:
        try:
            return self.router.route(name)
        except Refusal as exc:
            param = "model" if face is Face.OPENAI else "model_ref"
            problems = tuple(p.replace("model:", f"{param}:", 1) for p in exc.problems)
            raise attrs.evolve(exc, param=param, problems=problems) from None

    async def _fit_context(self, route: Route, request: TaskRequest, *, fit: bool) -> TaskRequest:
        """``request`` if its prompt and ``max_tokens`` fit the context; with ``fit``, its
        ``max_tokens`` lowered to what does; else a refusal. A model that is not loaded
        cannot count tokens: its task is admitted on the bound alone, and the engine
        refuses a prompt that does not fit when the task runs."""
        limit = self.limits.ctx_limit
        if _prompt_token_bound(request.prompt) + request.max_tokens <= limit:
            return request
        if not route.engine_ready():
            return request
        tokens = route.engine
        try:
            prompt = request.prompt
            assert not isinstance(prompt, Embed)  # bounded above
            if isinstance(prompt, Chat):
                prompt = await tokens.render_chat(request.engine_params())
            prompt_tokens = await tokens.count_tokens(prompt)
        except EngineError as exc:
            if not exc.retriable:  # the engine refused the prompt itself (it will again)
                raise Refusal(exc.code, exc.message) from exc
            raise Refusal(
                ErrorCode.POOL_UNREADY,
                f"cannot measure the prompt: {exc.message}",
                retriable=True,
                retry_after_ms=1000,
            ) from exc
        if fit and prompt_tokens < limit:
            return attrs.evolve(request, max_tokens=min(request.max_tokens, limit - prompt_tokens))
        if prompt_tokens + request.max_tokens > limit:
            raise Refusal(
                ErrorCode.CTX_LIMIT_EXCEEDED,
                f"prompt ({prompt_tokens} tokens) + max_tokens ({request.max_tokens}) exceeds "
                f"the context limit ({limit} tokens)",
            )
        return request

    def statistics(self) -> AdmissionStatistics:
        """Counts of admitted tasks by face and of refusals by face and error code."""
        return AdmissionStatistics(admitted=dict(self._admitted), rejected=dict(self._rejected))
