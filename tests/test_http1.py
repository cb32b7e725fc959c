"""The sans-I/O HTTP/1.1 and SSE framing of the engine stream reader
(``orchestra/engine/http1.py``): whatever pieces the bytes arrive in, the same body and
the same ``data:`` payloads come out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.engine.http1 import BadFraming, Body, Chunked, DataLines, response_head


def chunked(parts: list[bytes], extension: bool = False) -> bytes:
    ext = b";name=value" if extension else b""
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts if p) + b"0\r\n\r\n"


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(
    parts=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    extension=st.booleans(),
)
def test_chunked_body_is_rebuilt_from_any_split(
    parts: list[bytes], cuts: list[int], extension: bool
) -> None:
    decoder = Chunked()
    out = b"".join(decoder.feed(piece) for piece in split_at(chunked(parts, extension), cuts))
    assert out == b"".join(parts)
    assert decoder.done


def test_chunked_is_not_done_before_its_last_chunk() -> None:
    decoder = Chunked()
    assert decoder.feed(b"5\r\nhello\r\n") == b"hello"
    assert not decoder.done
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.done


@pytest.mark.parametrize(
    "wire",
    [b"zz\r\nhello\r\n", b"5\r\nhelloXX", b"f" * 2000],
    ids=["bad size", "no CRLF after data", "endless size line"],
)
def test_chunked_framing_errors(wire: bytes) -> None:
    with pytest.raises(BadFraming):
        Chunked().feed(wire)


def test_body_by_content_length_stops_at_its_length() -> None:
    body = Body.of({b"content-length": b"5"})
    assert body.feed(b"hel") == b"hel"
    assert not body.done
    assert body.feed(b"loEXTRA") == b"lo"
    assert body.done
    assert not body.ends_at_close


def test_body_without_length_or_chunking_ends_at_close() -> None:
    body = Body.of({})
    assert body.feed(b"anything") == b"anything"
    assert not body.done
    assert body.ends_at_close


def test_bad_content_length() -> None:
    with pytest.raises(BadFraming):
        Body.of({b"content-length": b"five"})


def test_response_head() -> None:
    status, headers = response_head(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nX-Empty:"
    )
    assert status == 503
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"transfer-encoding"] == b"chunked"
    assert headers[b"x-empty"] == b""


@pytest.mark.parametrize("head", [b"SPDY 200 OK", b"HTTP/1.1 OK", b"HTTP/1.1 200 OK\r\nno colon"])
def test_bad_response_heads(head: bytes) -> None:
    with pytest.raises(BadFraming):
        response_head(head)


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["data: ", "data:"]),
        st.text(st.characters(blacklist_characters="\r\n"), max_size=40).map(str.strip),
        st.sampled_from(["\n", "\r\n"]),
    ),
    max_size=10,
)


@given(events=EVENTS, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_data_lines_from_any_split(events: list[tuple[str, str, str]], cuts: list[int]) -> None:
    wire = "".join(
        f": comment{end}event: token{end}{field}{payload}{end}{end}"
        for field, payload, end in events
    ).encode()
    lines = DataLines()
    found = [line for piece in split_at(wire, cuts) for line in lines.feed(piece)]
    assert found + lines.end() == [payload.encode() for _, payload, _ in events]


def test_a_last_data_line_without_its_line_end() -> None:
    lines = DataLines()
    assert lines.feed(b'data: {"a":1}\n\ndata: [DONE]') == [b'{"a":1}']
    assert lines.end() == [b"[DONE]"]
    assert lines.end() == []
