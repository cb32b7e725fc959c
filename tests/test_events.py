"""EventLog: append-only, bounded, closable; readers resume where they left off."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from orchestra.events import EventKind, EventLog, encode_event


def test_encoding_is_one_sse_frame_with_id_and_event() -> None:
    wire = encode_event(3, EventKind.TOKEN, {"t": "a\nb", "i": 2})
    lines = wire.decode().split("\n")
    assert lines[0] == "id: 3"
    assert lines[1] == "event: token"
    assert json.loads(lines[2].removeprefix("data: ")) == {"t": "a\nb", "i": 2}
    assert wire.endswith(b"\n\n") and wire.count(b"\n\n") == 1


def test_nothing_is_appended_after_the_log_closes() -> None:
    log = EventLog(limit=10)
    assert log.append(EventKind.TOKEN, {"t": "x", "i": 0})
    assert log.finish(EventKind.ERROR, {"code": "CANCELLED"})
    assert not log.append(EventKind.TOKEN, {"t": "late", "i": 1})
    assert not log.finish(EventKind.END, {"tokens_out": 1})
    assert [e.kind for e in log.events] == [EventKind.TOKEN, EventKind.ERROR]
    assert log.tokens == 1


def test_limit_bounds_events_but_the_terminal_one_always_fits() -> None:
    log = EventLog(limit=2)
    assert log.append(EventKind.STARTED, {})
    assert log.append(EventKind.TOKEN, {"t": "a", "i": 0})
    assert not log.append(EventKind.TOKEN, {"t": "b", "i": 1})
    assert log.finish(EventKind.END, {"tokens_out": 1})
    assert len(log) == 3


def test_finish_refuses_a_non_terminal_kind() -> None:
    with pytest.raises(ValueError, match="not a terminal"):
        EventLog(limit=1).finish(EventKind.TOKEN, {})


@given(st.lists(st.text(max_size=5), max_size=20), st.integers(0, 25))
def test_events_from_any_index_is_the_suffix(texts: list[str], start: int) -> None:
    log = EventLog(limit=100)
    for i, text in enumerate(texts):
        log.append(EventKind.TOKEN, {"t": text, "i": i})
    log.finish(EventKind.END, {"tokens_out": len(texts)})
    assert list(log.events_from(start)) == list(log.events)[start:]
    assert [e.id for e in log.events] == list(range(len(log)))


async def test_wait_beyond_wakes_on_append_and_on_close() -> None:
    log = EventLog(limit=10)
    woke: list[str] = []

    async def waiter(name: str, index: int) -> None:
        await log.wait_beyond(index)
        woke.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "first", 0)
        nursery.start_soon(waiter, "second", 1)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        log.append(EventKind.STARTED, {})
        await trio.testing.wait_all_tasks_blocked()
        assert woke == ["first"]
        log.close()
    assert sorted(woke) == ["first", "second"]


async def test_abandoned_means_had_readers_and_has_none() -> None:
    log = EventLog(limit=10)
    with trio.move_on_after(0) as never:
        await log.wait_abandoned()  # nobody ever subscribed: not abandoned
    assert never.cancelled_caught
    log.add_subscriber()
    log.add_subscriber()
    log.remove_subscriber()
    assert log.subscribers == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.wait_abandoned)
        await trio.testing.wait_all_tasks_blocked()
        log.remove_subscriber()
    with trio.fail_after(1):
        await log.wait_abandoned()
