"""The fake engine's chat template: OpenAI ``messages`` rendered into one prompt, as
``POST /apply-template`` returns it and ``/v1/chat/completions`` generates from it.

It checks a chat body as llama-server's ``oaicompat_chat_params_parse`` (server-common.cpp)
does, with its messages (a 400 ``invalid_request_error`` for a malformed body, a 500 for
media content, which a server without ``--mmproj`` cannot read), then renders a fixed
ChatML-like template:

.. code-block:: text

    <|im_start|>tools
    [{"type":"function","function":{...}}]<|im_end|>      (only when ``tools`` is not empty)
    <|im_start|>system
    You are terse.<|im_end|>
    <|im_start|>user
    Hello<|im_end|>
    <|im_start|>assistant
    Hi.
    <tool_call>{"name":"f","arguments":"{}"}</tool_call><|im_end|>   (an assistant's tool calls)
    <|im_start|>tool
    {"ok":true}<|im_end|>
    <|im_start|>assistant
                                    (the generation prompt: ``<|im_start|>assistant`` + newline)

Every message is ``<|im_start|>ROLE`` newline, its content, ``<|im_end|>`` newline. A content
given as parts is its text parts joined with newlines; ``null`` is empty. As with the real
engine's ``prefill_assistant``, a conversation ending with an assistant message continues
that message: it is left open (no ``<|im_end|>``) and no generation prompt follows.
``add_generation_prompt: false`` leaves the generation prompt out.
"""

from __future__ import annotations

import json
from typing import Any

START, END = "<|im_start|>", "<|im_end|>"
_MEDIA = {
    "image_url": "image",
    "input_audio": "audio",
    "input_video": "video",
    "video_url": "video",
}


class ChatRequestError(Exception):
    """A chat body the engine refuses: ``status`` (400 or 500) and the error's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_choice(body: dict[str, Any]) -> str:
    """``auto``, ``none`` or ``required`` (a non-string choice reads as ``auto``, as there)."""
    choice = body.get("tool_choice", "auto")
    if not isinstance(choice, str):
        return "auto"
    if choice not in ("auto", "none", "required"):
        raise ChatRequestError(400, f"Invalid tool_choice: {choice}")
    return choice


def tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``tools`` (those that are objects), or ``[]``."""
    given = body.get("tools")
    if not isinstance(given, list):
        return []
    return [tool for tool in given if isinstance(tool, dict)]


def check_response_format(body: dict[str, Any]) -> None:
    """``response_format.type`` must be ``text``, ``json_object`` or ``json_schema`` (it is
    accepted, not enforced: the fake's words are not JSON)."""
    response_format = body.get("response_format")
    kind = response_format.get("type", "") if isinstance(response_format, dict) else ""
    if kind not in ("", "text", "json_object", "json_schema"):
        message = 'response_format type must be one of "text" or "json_object", but got: '
        raise ChatRequestError(400, message + str(kind))


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ChatRequestError(400, "Expected 'content' to be a string or an array")
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind is None:
            raise ChatRequestError(400, f"Missing content part type: {_compact(part)}")
        if kind in _MEDIA:
            hint = "hint: if this is unexpected, you may need to provide the mmproj"
            raise ChatRequestError(500, f"{_MEDIA[kind]} input is not supported - {hint}")
        if kind != "text":
            raise ChatRequestError(400, f"Unsupported content part type: {_compact(kind)}")
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _tool_calls(message: dict[str, Any]) -> str:
    calls = message.get("tool_calls")
    rendered = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        name = function.get("name", "") if isinstance(function, dict) else ""
        arguments = function.get("arguments", "") if isinstance(function, dict) else ""
        rendered.append(
            f"\n<tool_call>{_compact({'name': name, 'arguments': arguments})}</tool_call>"
        )
    return "".join(rendered)


def messages(body: Any) -> list[dict[str, Any]]:
    """The body's ``messages``, checked as the engine checks them."""
    if not isinstance(body, dict):
        raise ChatRequestError(400, "Invalid JSON: the body must be a JSON object")
    if "messages" not in body:
        raise ChatRequestError(400, "'messages' is required")
    given = body["messages"]
    if not isinstance(given, list):
        raise ChatRequestError(400, "Expected 'messages' to be an array")
    for message in given:
        if not isinstance(message, dict):
            raise ChatRequestError(
                400, f"Expected 'message' to be an object, got {_compact(message)}"
            )
        role = message.get("role")
        if role != "assistant" and "content" not in message:
            raise ChatRequestError(400, "All non-assistant messages must contain 'content'")
        if role == "assistant" and "content" not in message and "tool_calls" not in message:
            raise ChatRequestError(
                400, "Assistant message must contain either 'content' or 'tool_calls'!"
            )
        if not isinstance(role, str):
            raise ChatRequestError(400, f"Missing 'role' in message: {_compact(message)}")
    return given


def render(body: Any) -> str:
    """The prompt for a chat body (``messages``, ``tools``, ``add_generation_prompt``), or
    :class:`ChatRequestError`."""
    turns = messages(body)
    tool_choice(body)
    check_response_format(body)
    prefill = bool(turns) and turns[-1]["role"] == "assistant"
    if prefill and len(turns) >= 2 and turns[-2]["role"] == "assistant":
        raise ChatRequestError(
            400, "Cannot have 2 or more assistant messages at the end of the list."
        )
    if prefill and turns[-1].get("tool_calls"):
        raise ChatRequestError(
            400, "Cannot continue an assistant message that contains tool calls."
        )
    parts = []
    if offered := tools(body):
        parts.append(f"{START}tools\n{_compact(offered)}{END}\n")
    for i, message in enumerate(turns):
        text = f"{START}{message['role']}\n{_content(message)}"
        if message["role"] == "assistant":
            text += _tool_calls(message)
        open_end = prefill and i == len(turns) - 1
        parts.append(text if open_end else text + f"{END}\n")
    if not prefill and body.get("add_generation_prompt", True) is not False:
        parts.append(f"{START}assistant\n")
    return "".join(parts)
