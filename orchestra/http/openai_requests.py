"""OpenAI request bodies (``POST /v1/chat/completions``, ``POST /v1/completions``) turned
into tasks, or refused with every bad field named (``specs/openapi/openai.yaml``).

A field is accepted only where orchestra does what OpenAI documents for it; a field it
cannot honour (``n`` > 1, ``logprobs``, audio, images, ...) is refused by name, never
ignored. Orchestra's own fields ride beside OpenAI's (``extra_body`` in the official SDKs):
``priority``, ``deadline_ms``, ``session_id``, ``determinism``, ``task_id``, and
llama.cpp's ``top_k``, ``min_p``, ``repeat_penalty``. Without ``determinism``, a request
with a ``seed`` is ``strict`` (the same bytes every time) and one without is
``best_effort`` (the engine's prompt cache on, which chat clients that resend the whole
conversation need). Without ``max_tokens``, a task may generate up to
``admission.max_tokens_limit`` tokens, lowered to what fits the context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from orchestra.actors import fields
from orchestra.actors.admission import ID_RE, SEED_MAX
from orchestra.actors.fields import Check, Problem, describe
from orchestra.config import AdmissionConfig
from orchestra.http import openai_messages
from orchestra.http.openai_messages import FUNCTION_NAME, TEXT_LIMIT
from orchestra.task import SAMPLING_FIELDS, Chat, Determinism, Face, Priority, TaskRequest

_TOKEN_ID = re.compile(r"[0-9]{1,9}")
_MAX_LOGIT_BIAS = 300


@attrs.frozen
class OpenAIRequest:
    """A parsed OpenAI request: the task, and how its answer is to be given."""

    task: TaskRequest
    model: str
    stream: bool
    include_usage: bool
    fit_max_tokens: bool
    """``max_tokens`` was left out: up to the limit, lowered to what fits the context."""

    def with_task(self, task: TaskRequest) -> OpenAIRequest:
        return attrs.evolve(self, task=task)


def _neutral(value: Any, *, what: str) -> Check:
    """A field accepted only with the value that asks for nothing orchestra lacks."""

    def check(given: Any) -> Any:
        if given != value or isinstance(given, bool) is not isinstance(value, bool):
            raise Problem(f"{what} (got {describe(given)})")
        return given

    return check


def _not_supported(given: Any) -> Any:
    raise Problem("not supported by orchestra")


def _model(given: Any) -> str:
    if not isinstance(given, str) or not given:
        raise Problem(f"must be a non-empty string (got {describe(given)})")
    return given


def _stop(given: Any) -> tuple[str, ...]:
    if isinstance(given, str):
        given = [given]
    return fields.stop_list(given)


def _penalty(given: Any) -> float:
    return float(fields.number(-2.0, 2.0)(given))


def _logit_bias(given: Any) -> tuple[tuple[int, float], ...]:
    if not isinstance(given, dict):
        raise Problem(f"must be an object of token ids and biases (got {describe(given)})")
    if len(given) > _MAX_LOGIT_BIAS:
        raise Problem(f"may hold at most {_MAX_LOGIT_BIAS} tokens (got {len(given)})")
    pairs = []
    for token, bias in given.items():
        if not _TOKEN_ID.fullmatch(token):  # str.isdigit() holds for "²", which int() refuses
            raise Problem(f"keys must be token ids (got {describe(token)})")
        pairs.append((int(token), fields.number(-100.0, 100.0)(bias)))
    return tuple(pairs)


def _json_schema(given: Any) -> Mapping[str, Any]:
    """``response_format``: the JSON schema the engine constrains the output to."""
    if not isinstance(given, dict) or given.get("type") not in (
        "text",
        "json_object",
        "json_schema",
    ):
        raise Problem('must be an object whose "type" is text, json_object or json_schema')
    kind = given["type"]
    extra = sorted(set(given) - {"type", *(("json_schema",) if kind == "json_schema" else ())})
    if extra:
        raise Problem(f".{extra[0]}: unknown field")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"type": "object"}
    spec = given.get("json_schema")
    if not isinstance(spec, dict):
        raise Problem('.json_schema: required, an object with "name" and "schema"')
    unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if unknown:
        raise Problem(f".json_schema.{unknown[0]}: unknown field")
    name = spec.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise Problem(".json_schema.name: required, 1 to 64 letters, digits, _ or -")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise Problem(f".json_schema.schema: must be an object (got {describe(schema)})")
    if not isinstance(spec.get("strict", False), bool | None):
        raise Problem(".json_schema.strict: must be true or false")
    if not isinstance(spec.get("description", ""), str):
        raise Problem(".json_schema.description: must be a string")
    return schema


def _stream_options(given: Any) -> bool:
    if not isinstance(given, dict) or set(given) - {"include_usage"}:
        raise Problem('must be an object with only "include_usage"')
    return fields.boolean(given.get("include_usage", False))


def _common(limits: AdmissionConfig) -> dict[str, Check]:
    """The fields both endpoints take."""
    return {
        "model": _model,
        "max_tokens": fields.integer(1, limits.max_tokens_limit),
        "temperature": fields.number(0.0, 2.0),
        "top_p": fields.number(0.0, 1.0, low_open=True),
        "seed": fields.integer(0, SEED_MAX),
        "stop": _stop,
        "presence_penalty": _penalty,
        "frequency_penalty": _penalty,
        "logit_bias": _logit_bias,
        "user": fields.string(max_len=256),
        "stream": fields.boolean,
        "stream_options": _stream_options,
        "n": _neutral(1, what="only 1 is supported"),
        "logprobs": _neutral(False, what="not supported (only false)"),
        # orchestra's own, and llama.cpp's samplers
        "priority": fields.choice(tuple(p.value for p in Priority)),
        "deadline_ms": fields.integer(1, 7 * 24 * 3600 * 1000),
        "session_id": fields.string(max_len=128, pattern=ID_RE),
        "determinism": fields.choice(tuple(d.value for d in Determinism)),
        "task_id": fields.string(max_len=128, pattern=ID_RE),
        "top_k": fields.integer(0, 1_000_000),
        "min_p": fields.number(0.0, 1.0),
        "repeat_penalty": fields.number(0.0, 10.0),
        "artifact": fields.keep_artifact,
    }


def _chat_fields(limits: AdmissionConfig) -> dict[str, Check]:
    unsupported = (
        "audio",
        "modalities",
        "prediction",
        "top_logprobs",
        "functions",
        "function_call",
        "web_search_options",
        "reasoning_effort",
        "metadata",
        "service_tier",
        "store",
    )
    return {
        **_common(limits),
        **dict.fromkeys(unsupported, _not_supported),
        "messages": openai_messages.messages,
        "max_completion_tokens": fields.integer(1, limits.max_tokens_limit),
        "response_format": _json_schema,
        "tools": openai_messages.tools,
        "tool_choice": openai_messages.tool_choice,
        "parallel_tool_calls": fields.boolean,
    }


def _prompt(given: Any) -> str:
    if isinstance(given, list):
        if len(given) != 1:
            raise Problem("only one prompt is supported (a string, or a list of one)")
        given = given[0]
    if not isinstance(given, str):
        raise Problem("must be a string (token arrays are not supported)")
    return str(fields.string(max_len=TEXT_LIMIT, empty=False)(given))


def _completion_fields(limits: AdmissionConfig) -> dict[str, Check]:
    return {
        **_common(limits),
        "prompt": _prompt,
        "echo": _neutral(False, what="not supported (only false)"),
        "best_of": _neutral(1, what="only 1 is supported"),
        "suffix": _not_supported,
    }


_TASK_FIELDS = (
    *SAMPLING_FIELDS,
    "logit_bias",
    "stop",
    "session_id",
    "task_id",
    "deadline_ms",
    "artifact",
)


def _request(
    values: dict[str, Any], prompt: str | Chat, limits: AdmissionConfig, problems: fields.Problems
) -> OpenAIRequest | None:
    if values.get("stream_options") is not None and not values.get("stream"):
        problems.add("stream_options", "only allowed when stream is true")
    given = [values[k] for k in ("max_tokens", "max_completion_tokens") if k in values]
    if len(set(given)) > 1:
        problems.add("max_completion_tokens", "differs from max_tokens (give one)")
    if problems:
        return None
    seed = values.get("seed")
    default = Determinism.STRICT if seed is not None else Determinism.BEST_EFFORT
    task = TaskRequest(
        prompt=prompt,
        max_tokens=given[0] if given else limits.max_tokens_limit,
        priority=Priority(values.get("priority", Priority.INTERACTIVE)),
        determinism=Determinism(values.get("determinism", default)),
        json_schema=values.get("response_format") or None,
        face=Face.OPENAI,
        model_ref=values.get("model"),
        **{k: values[k] for k in _TASK_FIELDS if k in values},
    )
    return OpenAIRequest(
        task=task,
        model=values["model"],
        stream=values.get("stream", False),
        include_usage=values.get("stream_options", False),
        fit_max_tokens=not given,
    )


def parse_chat(raw: Mapping[str, Any], limits: AdmissionConfig) -> OpenAIRequest:
    """A ``/v1/chat/completions`` body as a task; one refusal naming every bad field."""
    problems = fields.Problems()
    checks = _chat_fields(limits)
    values = fields.checked(raw, checks, problems, required=("model", "messages"))
    chat = None
    if "messages" in values:
        chat = Chat(
            messages=values["messages"],
            tools=values.get("tools", ()),
            tool_choice=values.get("tool_choice"),
            parallel_tool_calls=values.get("parallel_tool_calls"),
        )
        if chat.tool_choice == "required" and not chat.tools:
            problems.add("tool_choice", "required needs tools")
    parsed = _request(values, chat or "", limits, problems)
    problems.refuse_if_any()
    assert parsed is not None
    return parsed


def parse_completion(raw: Mapping[str, Any], limits: AdmissionConfig) -> OpenAIRequest:
    """A ``/v1/completions`` body as a task; one refusal naming every bad field."""
    problems = fields.Problems()
    checks = _completion_fields(limits)
    values = fields.checked(raw, checks, problems, required=("model", "prompt"))
    parsed = _request(values, values.get("prompt", ""), limits, problems)
    problems.refuse_if_any()
    assert parsed is not None
    return parsed


Parser = Callable[[Mapping[str, Any], AdmissionConfig], OpenAIRequest]
""":func:`parse_chat` or :func:`parse_completion`."""
