"""A task's events as OpenAI answers: ``chat.completion`` (and its chunks) or
``text_completion`` (``specs/openai.md``; a refusal's error object is
:func:`orchestra.http.envelope.openai_error`).

An :class:`Answer` reads the same event log as the task's v1 stream, so the text of both
faces is the same bytes. Streamed, every ``token`` becomes a content delta and every
``tool_call`` piece a ``tool_calls`` delta; the ``end`` event becomes the chunk with
``finish_reason`` (and, with ``stream_options.include_usage``, a chunk with ``usage``),
then ``data: [DONE]``. An ``error`` event (a cancel, a failed engine) becomes one
``data: {"error": {...}}`` chunk and the stream ends there, without ``[DONE]``, as
llama-server ends its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from orchestra.errors import ErrorCode, Refusal
from orchestra.events import EventKind, StreamEvent
from orchestra.task import Endpoint

DONE: Final = b"data: [DONE]\n\n"


def _frame(value: Mapping[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


@attrs.define
class Answer:
    """The OpenAI answer of one task, built from its events as they come.

    ``chunk_for`` turns each event into the stream's frames (and keeps what a whole answer
    needs); :meth:`whole` is the non-streamed answer once the log has ended.
    """

    endpoint: Endpoint
    task_id: str
    model: str
    created: int
    include_usage: bool = False
    fingerprint: str = ""
    text: list[str] = attrs.field(factory=list)
    calls: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    end: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    _around: list[bytes] = attrs.field(factory=list, repr=False)

    @property
    def id(self) -> str:
        prefix = "chatcmpl-" if self.endpoint is Endpoint.CHAT else "cmpl-"
        return prefix + self.task_id

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
        }

    def _chunk(self, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        extra = self.artifact if finish is not None else {}
        if self.endpoint is Endpoint.CHAT:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk = {**self._envelope("chat.completion.chunk"), "choices": [choice]}
            return _frame(chunk | extra)
        choice = {
            "index": 0,
            "text": delta.get("content", ""),
            "logprobs": None,
            "finish_reason": finish,
        }
        return _frame({**self._envelope("text_completion"), "choices": [choice]} | extra)

    @property
    def artifact(self) -> dict[str, Any]:
        """orchestra's fields beside OpenAI's in the answer's last chunk (or the whole
        answer): the ``artifact_id`` its output was kept as, or ``artifact_error``."""
        end = self.end or {}
        return {k: end[k] for k in ("artifact_id", "artifact_error") if k in end}

    def _text_chunk(self, text: str) -> bytes:
        """The chunk of one piece of text: :meth:`_chunk`'s bytes, with the parts around the
        text encoded once per answer (this runs for every token)."""
        if not self._around:
            marker = "\x00"
            whole = self._chunk({"content": marker}).decode()
            before, _, after = whole.partition(json.dumps(marker))
            self._around = [before.encode(), after.encode()]
        head, tail = self._around
        return head + json.dumps(text, ensure_ascii=False).encode() + tail

    def opening(self) -> bytes:
        """The first frame of a chat stream: the assistant's role (nothing for completions)."""
        if self.endpoint is Endpoint.CHAT:
            return self._chunk({"role": "assistant", "content": ""})
        return b""

    def chunk_for(self, event: StreamEvent) -> bytes:
        """The stream's frames for ``event`` (empty for events OpenAI has no word for)."""
        data = event.data
        match event.kind:
            case EventKind.TOKEN:
                self.text.append(data["t"])
                return self._text_chunk(data["t"])
            case EventKind.TOOL_CALL:
                return self._chunk({"tool_calls": [self._tool_call(data)]})
            case EventKind.END:
                self.end = data
                frames = self._chunk({}, self.finish_reason)
                if self.include_usage:
                    usage = {
                        **self._envelope(self._chunk_object),
                        "choices": [],
                        "usage": self.usage,
                    }
                    frames += _frame(usage)
                return frames + DONE
            case EventKind.ERROR:
                self.error = data
                return _frame({"error": self._stream_error(data)})
        return b""

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.endpoint is Endpoint.CHAT else "text_completion"

    def _tool_call(self, data: Mapping[str, Any]) -> dict[str, Any]:
        index = int(data["index"])
        call = self.calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        delta: dict[str, Any] = {"index": index}
        function: dict[str, Any] = {}
        if "id" in data:
            call["id"] = delta["id"] = data["id"]
            delta["type"] = "function"
        if "name" in data:
            call["name"] = function["name"] = data["name"]
        call["arguments"] += data.get("arguments", "")
        function["arguments"] = data.get("arguments", "")
        delta["function"] = function
        return delta

    @property
    def finish_reason(self) -> str:
        if self.end is None:
            return "stop"
        return str(self.end.get("finish_reason") or "stop")

    @property
    def usage(self) -> dict[str, Any]:
        end = self.end or {}
        prompt = int(end.get("tokens_in") or 0)
        completion = int(end.get("tokens_out") or 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": int(end.get("cached_tokens") or 0)},
        }

    @staticmethod
    def _stream_error(data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "message": data.get("message", ""),
            "type": "server_error",
            "param": None,
            "code": data.get("code"),
            "retriable": data.get("retriable", False),
        }

    def refusal(self) -> Refusal:
        """The task's ``error`` event as a refusal (for a non-streamed answer)."""
        assert self.error is not None
        return Refusal(
            ErrorCode(self.error["code"]),
            str(self.error.get("message", "")),
            retriable=bool(self.error.get("retriable", False)),
        )

    def whole(self) -> dict[str, Any]:
        """The non-streamed answer (after the ``end`` event)."""
        text = "".join(self.text)
        if self.endpoint is Endpoint.COMPLETION:
            choice: dict[str, Any] = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            whole = {**self._envelope("text_completion"), "choices": [choice], "usage": self.usage}
            return whole | self.artifact
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for _, call in sorted(self.calls.items())
            ]
        elif not text:
            message["content"] = ""
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }
        whole = {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage}
        return whole | self.artifact
