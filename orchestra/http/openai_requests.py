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
from orchestra.task import SAMPLING_FIELDS, Chat, Determinism, Face, Priority, TaskRequest

ROLES = ("system", "developer", "user", "assistant", "tool")
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_ID = re.compile(r"[0-9]{1,9}")
_MAX_MESSAGES = 4096
_MAX_TOOLS = 128
_MAX_LOGIT_BIAS = 300
_TEXT_LIMIT = 4 * 1024 * 1024


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


def _lone_surrogate_at(value: Any, where: str = "") -> str | None:
    """Where in ``value`` a string (or an object's key) holds a lone surrogate, which JSON
    can carry (``"\\ud800"``) but UTF-8 cannot: ``""`` for ``value`` itself, else the
    path inside it (``[0].content``); None when there is none."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else where
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _lone_surrogate_at(item, f"{where}[{i}]")) is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(key):
                return where
            if (found := _lone_surrogate_at(item, f"{where}.{key}")) is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _unicode(check: Check) -> Check:
    """``check``, after refusing a value with a lone surrogate anywhere in it: the engine
    is sent UTF-8, which cannot hold one."""

    def checked(given: Any) -> Any:
        where = _lone_surrogate_at(given)
        if where is not None:
            raise Problem(f"{where}{': ' if where else ''}must be valid Unicode (a lone surrogate)")
        return check(given)

    return checked


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
    if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
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


def _text(given: Any, where: str) -> str:
    """Message content: a string, or a list of text parts (joined, as the engine does)."""
    if isinstance(given, str):
        return str(fields.string(max_len=_TEXT_LIMIT)(given))
    if not isinstance(given, list):
        raise Problem(f"{where}: must be a string or a list of text parts")
    texts = []
    for i, part in enumerate(given):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            what = f"{describe(kind)} parts are not supported" if kind else "must be a text part"
            raise Problem(f"{where}[{i}]: {what} (only text)")
        if set(part) - {"type", "text"} or not isinstance(part.get("text"), str):
            raise Problem(f'{where}[{i}]: a text part is {{"type": "text", "text": string}}')
        texts.append(part["text"])
    return "\n".join(texts)


def _tool_calls(given: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(given, list):
        raise Problem(f"{where}: must be a list")
    calls = []
    for i, call in enumerate(given):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or call.get("type", "function") != "function"
            or set(call) - {"id", "type", "function"}
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
            or set(function) - {"name", "arguments"}
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise Problem(
                f'{where}[{i}]: must be {{"id", "type": "function", '
                f'"function": {{"name", "arguments"}}}}'
            )
        calls.append({"id": call["id"], "type": "function", "function": dict(function)})
    return calls


_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
_NULL_ONLY_KEYS = frozenset({"refusal", "function_call", "audio", "annotations"})
"""Keys the official SDKs write into an assistant message given back as history; accepted
when null (or empty), as they say nothing."""


def _message(given: Any, where: str) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise Problem(f"{where}: must be an object")
    for key in sorted(given):
        if key in _NULL_ONLY_KEYS and given[key] in (None, []):
            continue
        if key not in _MESSAGE_KEYS:
            what = "not supported" if key in _NULL_ONLY_KEYS else "unknown field"
            raise Problem(f"{where}.{key}: {what}")
    role = given.get("role")
    if role not in ROLES:
        raise Problem(f"{where}.role: must be one of {', '.join(ROLES)} (got {describe(role)})")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = given.get("content")
    if content is None and not (role == "assistant" and given.get("tool_calls")):
        raise Problem(f"{where}.content: required")
    if content is not None:
        out["content"] = _text(content, f"{where}.content")
    if given.get("name") is not None:
        out["name"] = fields.string(max_len=256, empty=False)(given["name"])
    if given.get("tool_calls") is not None:
        if role != "assistant":
            raise Problem(f"{where}.tool_calls: only an assistant message calls tools")
        out["tool_calls"] = _tool_calls(given["tool_calls"], f"{where}.tool_calls")
    if role == "tool":
        call_id = given.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise Problem(f"{where}.tool_call_id: required in a tool message")
        out["tool_call_id"] = call_id
    elif given.get("tool_call_id") is not None:
        raise Problem(f"{where}.tool_call_id: only a tool message answers a call")
    return out


def _messages(given: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(given, list) or not given:
        raise Problem("must be a non-empty list of messages")
    if len(given) > _MAX_MESSAGES:
        raise Problem(f"may hold at most {_MAX_MESSAGES} messages (got {len(given)})")
    return tuple(_message(m, f"[{i}]") for i, m in enumerate(given))


def _tools(given: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(given, list) or len(given) > _MAX_TOOLS:
        raise Problem(f"must be a list of at most {_MAX_TOOLS} tools")
    tools = []
    for i, tool in enumerate(given):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or set(tool) - {"type", "function"}
        ):
            raise Problem(f'[{i}]: must be {{"type": "function", "function": {{...}}}}')
        if not isinstance(function, dict):
            raise Problem(f"[{i}].function: required, an object")
        unknown = sorted(set(function) - {"name", "description", "parameters", "strict"})
        if unknown:
            raise Problem(f"[{i}].function.{unknown[0]}: unknown field")
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
            raise Problem(f"[{i}].function.name: required, 1 to 64 letters, digits, _ or -")
        if not isinstance(function.get("description", ""), str):
            raise Problem(f"[{i}].function.description: must be a string")
        if not isinstance(function.get("parameters", {}), dict):
            raise Problem(f"[{i}].function.parameters: must be a JSON schema object")
        if not isinstance(function.get("strict", False), bool | None):
            raise Problem(f"[{i}].function.strict: must be true or false")
        tools.append({"type": "function", "function": dict(function)})
    return tuple(tools)


def _tool_choice(given: Any) -> str:
    if isinstance(given, dict):
        raise Problem("naming one function is not supported; use auto, none or required")
    return str(fields.choice(("auto", "none", "required"))(given))


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
        "messages": _messages,
        "max_completion_tokens": fields.integer(1, limits.max_tokens_limit),
        "response_format": _json_schema,
        "tools": _tools,
        "tool_choice": _tool_choice,
        "parallel_tool_calls": fields.boolean,
    }


def _prompt(given: Any) -> str:
    if isinstance(given, list):
        if len(given) != 1:
            raise Problem("only one prompt is supported (a string, or a list of one)")
        given = given[0]
    if not isinstance(given, str):
        raise Problem("must be a string (token arrays are not supported)")
    return str(fields.string(max_len=_TEXT_LIMIT, empty=False)(given))


def _completion_fields(limits: AdmissionConfig) -> dict[str, Check]:
    return {
        **_common(limits),
        "prompt": _prompt,
        "echo": _neutral(False, what="not supported (only false)"),
        "best_of": _neutral(1, what="only 1 is supported"),
        "suffix": _not_supported,
    }


def _unicode_checks(checks: Mapping[str, Check]) -> dict[str, Check]:
    return {name: _unicode(check) for name, check in checks.items()}


_TASK_FIELDS = (
    *SAMPLING_FIELDS,
    "logit_bias",
    "stop",
    "session_id",
    "task_id",
    "deadline_ms",
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
    checks = _unicode_checks(_chat_fields(limits))
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
    checks = _unicode_checks(_completion_fields(limits))
    values = fields.checked(raw, checks, problems, required=("model", "prompt"))
    parsed = _request(values, values.get("prompt", ""), limits, problems)
    problems.refuse_if_any()
    assert parsed is not None
    return parsed


Parser = Callable[[Mapping[str, Any], AdmissionConfig], OpenAIRequest]
""":func:`parse_chat` or :func:`parse_completion`."""
