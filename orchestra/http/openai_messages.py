"""What a conversation in an OpenAI chat body may hold: ``messages`` (roles, text or text
parts, an assistant's tool calls, a tool's answer) and ``tools`` / ``tool_choice``, each
check returning the JSON the engine is sent or raising :class:`Problem` naming the place
(``[0].content[1]``). Used by :mod:`orchestra.http.openai_requests`."""

from __future__ import annotations

import re
from typing import Any

from orchestra.actors import fields
from orchestra.actors.fields import Problem, describe

ROLES = ("system", "developer", "user", "assistant", "tool")
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A function's (or a JSON schema's) name, as OpenAI allows it."""
TEXT_LIMIT = 4 * 1024 * 1024
_MAX_MESSAGES = 4096
_MAX_TOOLS = 128


def _text(given: Any, where: str) -> str:
    """Message content: a string, or a list of text parts (joined, as the engine does)."""
    if isinstance(given, str):
        return str(fields.string(max_len=TEXT_LIMIT)(given))
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


def messages(given: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(given, list) or not given:
        raise Problem("must be a non-empty list of messages")
    if len(given) > _MAX_MESSAGES:
        raise Problem(f"may hold at most {_MAX_MESSAGES} messages (got {len(given)})")
    return tuple(_message(m, f"[{i}]") for i, m in enumerate(given))


def tools(given: Any) -> tuple[dict[str, Any], ...]:
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
        if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
            raise Problem(f"[{i}].function.name: required, 1 to 64 letters, digits, _ or -")
        if not isinstance(function.get("description", ""), str):
            raise Problem(f"[{i}].function.description: must be a string")
        if not isinstance(function.get("parameters", {}), dict):
            raise Problem(f"[{i}].function.parameters: must be a JSON schema object")
        if not isinstance(function.get("strict", False), bool | None):
            raise Problem(f"[{i}].function.strict: must be true or false")
        tools.append({"type": "function", "function": dict(function)})
    return tuple(tools)


def tool_choice(given: Any) -> str:
    if isinstance(given, dict):
        raise Problem("naming one function is not supported; use auto, none or required")
    return str(fields.choice(("auto", "none", "required"))(given))
