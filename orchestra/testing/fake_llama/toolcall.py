"""Tool calls on ``/v1/chat/completions``: when the fake answers with one, and how it
streams it, as llama-server does (``common_chat_msg_diff::compute_diffs`` in common/chat.cpp,
``server_chat_msg_diff_to_json_oaicompat`` in server-chat.cpp).

The directive ``[[call:NAME]]`` in the last user message, in a request whose ``tools``
offer a function ``NAME`` (and whose ``tool_choice`` is not ``none``), makes the answer a
call of that function instead of text; with ``tool_choice: "required"`` and no directive the
first tool offered is called. The directive is part of the prompt like any other text.

The call's ``arguments`` are a compact JSON object with one value per property of the
function's ``parameters`` (in their order): a generated word for a string (or a property of
no known type), a number for ``integer``/``number``, ``true``/``false`` for ``boolean``; the
values are drawn like generated words, so the same prompt and seed give the same call. Its
``id`` is 32 random letters and digits (``gen_tool_call_id``).

Streamed, the first token is a delta ``{"tool_calls": [{"index": 0, "id": ID, "type":
"function", "function": {"name": NAME}}]}`` (no ``arguments`` key: the engine leaves out an
empty one) after the role chunk, then each token a delta ``{"tool_calls": [{"index": 0,
"function": {"arguments": PIECE}}]}``; the pieces concatenate to the ``arguments`` string.
The finish is ``tool_calls``. Non-streamed, ``message`` is ``{"role": "assistant",
"content": "", "tool_calls": [{"type", "function": {"name", "arguments"}, "id"}]}``. A call
is generated whole (a token for its name and one per piece), whatever the token budget;
``stop`` strings and ``[[empty:K]]`` do not apply to it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import attrs

from .oai import Reply, random_string
from .words import generated_word

_CALL = re.compile(r"\[\[call:([A-Za-z0-9_.-]+)\]\]")
_PIECE = re.compile(r"[A-Za-z0-9_]+|[^A-Za-z0-9_]+")


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, dict) else {}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                parts = [p.get("text", "") for p in content if isinstance(p, dict)]
                return "\n".join(str(p) for p in parts)
            return content if isinstance(content, str) else ""
    return ""


def wanted_call(
    messages: list[dict[str, Any]], offered: list[dict[str, Any]], *, required: bool
) -> dict[str, Any] | None:
    """The function (a tool's ``function`` object) the answer calls, or None for text."""
    functions = [_function(tool) for tool in offered if _function(tool).get("name")]
    names = _CALL.findall(_last_user_text(messages))
    for name in names:
        for function in functions:
            if function["name"] == name:
                return function
    return functions[0] if required and functions else None


def arguments(function: dict[str, Any], prompt: str, seed: object) -> str:
    """The call's ``arguments``: a compact JSON object, drawn from the prompt and seed."""
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    values: dict[str, Any] = {}
    for i, (name, schema) in enumerate((properties or {}).items()):
        word = generated_word(prompt, [seed, "call"], i)
        kind = schema.get("type") if isinstance(schema, dict) else None
        number = int.from_bytes(hashlib.sha256(word.encode()).digest()[:2], "big") % 100
        if kind in ("integer", "number"):
            values[name] = number
        elif kind == "boolean":
            values[name] = number % 2 == 0
        else:
            values[name] = word
    return json.dumps(values, separators=(",", ":"))


@attrs.define
class ToolCallReply(Reply):
    """An answer that is one call of ``tool`` (a tool's ``function`` object)."""

    tool: dict[str, Any] = attrs.field(factory=dict)
    call_id: str = attrs.field(factory=random_string)
    args: str = attrs.field(default="", init=False)
    pieces: list[str] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self.args = arguments(self.tool, self.job.prompt, self.job.seed)
        self.pieces = _PIECE.findall(self.args)

    @property
    def name(self) -> str:
        return str(self.tool["name"])

    @property
    def done(self) -> bool:
        return self.n_decoded >= 1 + len(self.pieces)

    @property
    def text(self) -> str:
        call = {"name": self.name, "arguments": "".join(self.pieces[: max(self.n_decoded - 1, 0)])}
        return "<tool_call>" + json.dumps(call, separators=(",", ":")) + "</tool_call>"

    def token(self, word: str, piece: str) -> bytes:
        self.n_decoded += 1
        if not self.job.stream:
            return b""
        if self.n_decoded == 1:
            call = {"index": 0, "id": self.call_id, "type": "function"}
            return self.deltas({"tool_calls": [{**call, "function": {"name": self.name}}]})
        argument = {"arguments": self.pieces[self.n_decoded - 2]}
        return self.deltas({"tool_calls": [{"index": 0, "function": argument}]})

    def finish_reason(self) -> str:
        return "tool_calls"

    def message(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": self.args}
        call = {"type": "function", "function": function, "id": self.call_id}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
