"""The SDK's typed view of the OpenAI face (``POST /v1/chat/completions``): the request,
the messages of a conversation, the whole answer and the pieces of a streamed one.

Every class is ``attrs.frozen``. A conversation's messages may be :class:`ChatMessage` s or
plain dicts in OpenAI's shape (``{"role": "user", "content": "..."}``), mixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from orchestra.sdk._artifacts import keep_artifact, keep_artifact_json
from orchestra.task import Determinism, KeepArtifact, Priority

# -- the conversation ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FunctionCall:
    """The function a tool call asks for, and its arguments (a JSON text, as the model
    wrote it: parse it with ``json.loads``)."""

    name: str
    arguments: str


@attrs.frozen(kw_only=True)
class ToolCall:
    """A tool call of an assistant message (OpenAI's shape)."""

    id: str
    function: FunctionCall
    type: str = "function"


@attrs.frozen
class ChatMessage:
    """One message of a conversation: ``ChatMessage("user", "Hello")``.

    ``role`` is ``system``, ``developer``, ``user``, ``assistant`` or ``tool``. An assistant
    message that called tools has ``tool_calls`` (and may have no ``content``); a ``tool``
    message answers the call ``tool_call_id``. A field left None is not sent.
    """

    role: str
    content: str | None = None
    name: str | None = attrs.field(default=None, kw_only=True)
    tool_calls: tuple[ToolCall, ...] | None = attrs.field(default=None, kw_only=True)
    tool_call_id: str | None = attrs.field(default=None, kw_only=True)

    def as_json(self) -> dict[str, Any]:
        """The message in OpenAI's JSON shape."""
        message: dict[str, Any] = {"role": self.role}
        if self.content is not None:
            message["content"] = self.content
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls is not None:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type,
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


Message = ChatMessage | Mapping[str, Any]
"""A message of a conversation: a :class:`ChatMessage`, or a dict in OpenAI's shape."""


def _messages(given: Sequence[Message]) -> tuple[Message, ...]:
    if isinstance(given, str | bytes | Mapping):
        raise TypeError("messages must be a sequence of messages, not one message or a string")
    return tuple(given)


def _stop(given: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    return given if given is None or isinstance(given, str) else tuple(given)


def _optional_tuple(given: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if given is None else tuple(given)


@attrs.frozen(kw_only=True)
class ChatRequest:
    """A chat completion to ask for. ``chat()`` and ``stream_chat()`` take its fields as
    keyword arguments; only ``messages`` is required. A field left None is not sent, and
    the server's default applies.

    OpenAI's fields, then orchestra's (sent beside them, as the official SDKs'
    ``extra_body``). Without ``determinism``, a request with a ``seed`` is ``strict`` (the
    same bytes every time) and one without is ``best_effort`` (the engine's prompt cache
    on, which a conversation resent whole needs).
    """

    messages: tuple[Message, ...] = attrs.field(converter=_messages)
    model: str = "default"
    """The model: a catalog id or alias, or ``default`` (the server's default model)."""
    max_tokens: int | None = None
    """Tokens to generate at most (server default: the limit, lowered to what fits)."""
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | None = attrs.field(default=None, converter=_stop)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: Mapping[str, float] | None = None
    """Token id (as a string, OpenAI's shape) to bias, -100 to 100."""
    user: str | None = None
    response_format: Mapping[str, Any] | None = None
    """``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"name",
    "schema"}}``: the engine constrains the output."""
    tools: tuple[Mapping[str, Any], ...] | None = attrs.field(
        default=None, converter=_optional_tuple
    )
    """OpenAI's ``[{"type": "function", "function": {"name", "description",
    "parameters"}}]``."""
    tool_choice: str | None = None
    """``auto``, ``none`` or ``required``."""
    parallel_tool_calls: bool | None = None
    # orchestra's own, and llama.cpp's samplers
    priority: Priority | None = attrs.field(
        default=None, converter=attrs.converters.optional(Priority)
    )
    deadline_ms: int | None = None
    session_id: str | None = None
    """Makes the chat the next turn of this session (pinned to one engine slot)."""
    determinism: Determinism | None = attrs.field(
        default=None, converter=attrs.converters.optional(Determinism)
    )
    task_id: str | None = None
    """The task's id (else the server makes one): the same id and body are the same task."""
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    artifact: KeepArtifact | None = attrs.field(default=None, converter=keep_artifact)
    """Keep the answer's text as an artifact (as ``TaskRequest.artifact``): its id is then
    :attr:`ChatCompletion.artifact_id`."""
    extra_body: Mapping[str, Any] | None = None
    """More fields, sent as they are (as the official SDKs' ``extra_body``): for a field
    of a newer server that this class does not name yet."""


def chat_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of ``request`` as a stream asking for its usage (the SDK always
    reads the answer as a stream; ``chat()`` assembles it)."""
    body: dict[str, Any] = {}
    for field in attrs.fields(ChatRequest):
        value = getattr(request, field.name)
        if value is None or field.name == "extra_body":
            continue
        if field.name == "messages":
            value = [m.as_json() if isinstance(m, ChatMessage) else dict(m) for m in value]
        elif isinstance(value, Priority | Determinism):
            value = str(value)
        elif isinstance(value, KeepArtifact):
            value = keep_artifact_json(value)
        elif isinstance(value, tuple):
            value = [dict(v) if isinstance(v, Mapping) else v for v in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        body[field.name] = value
    body.update(request.extra_body or {})
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


# -- the answer ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Usage:
    """What a chat cost: prompt tokens (``cached_tokens`` of them reused from the engine's
    prompt cache) and generated tokens."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0


@attrs.frozen(kw_only=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call ``index`` carries its
    ``id`` and ``name``, the next ones more of its ``arguments`` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen(kw_only=True)
class ChatDelta:
    """A piece of a streamed chat answer: ``content`` text, tool-call pieces, or (the last
    piece) ``finish_reason`` and ``usage``."""

    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    """On the last piece only: ``stop``, ``length`` or ``tool_calls``."""
    usage: Usage | None = None
    """On the last piece only."""

    @property
    def last(self) -> bool:
        """True for the last piece of the answer."""
        return self.finish_reason is not None


@attrs.frozen(kw_only=True)
class ChatCompletion:
    """A whole chat answer (``chat()``, or ``stream_chat()``'s once it ended)."""

    task_id: str
    """The orchestra task that generated it (``X-Task-Id``): ``status()`` shows it."""
    id: str
    """OpenAI's completion id (``chatcmpl-<task id>``)."""
    model: str
    text: str
    """The assistant's text (empty when it only called tools)."""
    finish_reason: str
    """``stop`` (the end, or a stop string), ``length`` (``max_tokens``) or ``tool_calls``."""
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    correlation_id: str | None
    """The server's ``X-Correlation-Id`` for this request (its log lines carry it)."""
    artifact_id: str | None = None
    """The artifact the text was kept as, for a chat with ``artifact``."""
    artifact_error: str | None = None
    """Why the text could not be kept as the artifact asked for."""

    @property
    def content(self) -> str:
        """The assistant's text (OpenAI's name for it)."""
        return self.text

    @property
    def message(self) -> ChatMessage:
        """The answer as the assistant message to append to the conversation."""
        if self.tool_calls:
            return ChatMessage("assistant", self.text or None, tool_calls=self.tool_calls)
        return ChatMessage("assistant", self.text)
