"""HTTP/1.1 and SSE framing, sans I/O: what :mod:`orchestra.engine.streams` needs to read
an engine's streamed answer from a plain socket (a response head, a chunked, sized or
close-delimited body, and the ``data:`` lines of an event stream), fed in pieces of any
size as they arrive."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from orchestra.errors import OrchestraError


@attrs.define
class DataLines:
    """The payloads of an SSE byte stream's ``data:`` lines (with or without the space
    after the colon, ``\\n`` or ``\\r\\n`` line ends; comments and other fields skipped),
    fed in pieces of any size."""

    pending: bytes = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads of the lines ``data`` completes."""
        *lines, self.pending = (self.pending + data).split(b"\n")
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]

    def end(self) -> list[bytes]:
        """The payload of a last line without its line end, if any."""
        last, self.pending = self.pending, b""
        return [last[5:].strip()] if last.startswith(b"data:") else []


class BadFraming(OrchestraError, ValueError):
    """The engine's bytes are not HTTP/1.1 as this reader knows it."""


@attrs.define
class Chunked:
    """Undoes ``Transfer-Encoding: chunked`` on bytes fed in pieces of any size."""

    pending: bytes = b""
    left: int = 0
    """Bytes of the current chunk still to come."""
    after_data: bool = False
    """The CRLF that ends a chunk's data is still to come."""
    done: bool = False

    def feed(self, data: bytes) -> bytes:
        buf, pos, out = self.pending + data, 0, []
        while not self.done:
            if self.left:
                piece = buf[pos : pos + self.left]
                out.append(piece)
                self.left -= len(piece)
                pos += len(piece)
                if self.left:
                    break
                self.after_data = True
            if self.after_data:
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadFraming("chunk data not followed by CRLF")
                pos += 2
                self.after_data = False
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > 1024:
                    raise BadFraming("chunk size line too long")
                break
            try:
                size = int(buf[pos:end].split(b";", 1)[0], 16)
            except ValueError:
                raise BadFraming(f"bad chunk size {buf[pos:end][:40]!r}") from None
            pos = end + 2
            if size == 0:
                self.done = True  # trailers, if any, are not read
            self.left = size
        self.pending = buf[pos:]
        return b"".join(out)


@attrs.define
class Body:
    """The body of an HTTP/1.1 response, however it is framed: chunked, by
    ``Content-Length``, or until the connection closes."""

    chunked: Chunked | None
    length: int | None

    @classmethod
    def of(cls, headers: Mapping[bytes, bytes]) -> Body:
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return cls(Chunked(), None)
        if b"content-length" in headers:
            try:
                return cls(None, int(headers[b"content-length"]))
            except ValueError:
                raise BadFraming("bad Content-Length") from None
        return cls(None, None)

    def feed(self, data: bytes) -> bytes:
        if self.chunked is not None:
            return self.chunked.feed(data)
        if self.length is not None:
            data = data[: self.length]
            self.length -= len(data)
        return data

    @property
    def done(self) -> bool:
        return self.chunked.done if self.chunked is not None else self.length == 0

    @property
    def ends_at_close(self) -> bool:
        return self.chunked is None and self.length is None


def response_head(raw: bytes) -> tuple[int, dict[bytes, bytes]]:
    """The status and the (lower-cased) headers of a response head."""
    status_line, *lines = raw.split(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadFraming(f"bad status line {status_line[:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadFraming(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
