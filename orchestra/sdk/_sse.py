"""A sans-I/O decoder for ``text/event-stream`` (the WHATWG server-sent events format).

Feed it bytes as they arrive; it returns the events completed so far. It knows nothing of
orchestra's event kinds, which :func:`orchestra.sdk._convert.event_from_wire` types.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class RawEvent:
    """One dispatched event: the last ``id:`` seen, the ``event:`` name, the ``data:``."""

    id: str | None
    event: str
    data: str


@attrs.define
class SSEDecoder:
    """Splits a byte stream into :class:`RawEvent` s. Comments (keep-alives) are dropped."""

    _buffer: bytes = b""
    _last_id: str | None = None
    _event: str = ""
    _data: list[str] = attrs.field(factory=list)

    def feed(self, chunk: bytes) -> list[RawEvent]:
        """The events that ``chunk`` completes (a partial line waits for the next chunk)."""
        self._buffer += chunk
        events: list[RawEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return events
            end, after = cut
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[after:]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> RawEvent | None:
        if line == "":
            if not self._data and not self._event:
                return None
            event = RawEvent(self._last_id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of ``buffer`` ends and the next begins (CRLF, LF or CR)."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 == len(buffer):
        return None  # a CR at the very end may be the first half of a CRLF
    return cr, cr + (2 if buffer[cr + 1] == 0x0A else 1)
