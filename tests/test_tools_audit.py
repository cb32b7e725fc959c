"""The tools' audit in SQLite: rows as recorded, pages newest first with a cursor, every
filter, the bound on rows, and a database from a newer orchestra left alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from orchestra.errors import AuditError
from orchestra.tools.audit import DB_NAME, AuditEntry, AuditLog, AuditQuery, rfc3339_ms


def entry(n: int, **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "at": rfc3339_ms(1_800_000_000 + n),
        "who": "token",
        "tool": "http_fetch",
        "decision": "allowed",
        "method": "GET",
        "url": f"https://example.com/{n}",
        **fields,
    }
    return AuditEntry(**values)  # type: ignore[arg-type]


async def test_an_entry_reads_back_as_recorded(tmp_path: Path) -> None:
    audit = await AuditLog.open(tmp_path, max_rows=100)
    written = entry(
        1, session_id="s", task_id="t", rule=None, status=200, bytes=12, time_ms=3.5,
        correlation_id="c-1",
    )  # fmt: skip
    recorded = await audit.record(written)
    assert recorded.id == 1
    page = await audit.page(AuditQuery())
    assert page.entries == (recorded,) and page.next_cursor is None
    assert recorded.as_json()["at"] == "2027-01-15T08:00:01.000Z"


async def test_pages_run_newest_first_and_the_cursor_goes_on(tmp_path: Path) -> None:
    audit = await AuditLog.open(tmp_path, max_rows=100)
    for n in range(7):
        await audit.record(entry(n))
    seen: list[int] = []
    cursor: int | None = None
    while True:
        page = await audit.page(AuditQuery(limit=3, before=cursor))
        seen += [e.id for e in page.entries if e.id is not None]
        if page.next_cursor is None:
            break
        cursor = int(page.next_cursor)
    assert seen == [7, 6, 5, 4, 3, 2, 1]


async def test_every_filter_narrows_the_page(tmp_path: Path) -> None:
    audit = await AuditLog.open(tmp_path, max_rows=100)
    await audit.record(entry(1, tool="search", who="proxy:ann", session_id="s1"))
    await audit.record(entry(2, decision="refused", rule="tools.policy.ports", task_id="t1"))
    await audit.record(entry(3, decision="failed", session_id="s1", task_id="t1"))
    cases = {
        AuditQuery(tool="search"): [1],
        AuditQuery(tool="http_fetch"): [3, 2],
        AuditQuery(decision="refused"): [2],
        AuditQuery(who="proxy:ann"): [1],
        AuditQuery(session_id="s1"): [3, 1],
        AuditQuery(task_id="t1"): [3, 2],
        AuditQuery(session_id="s1", task_id="t1"): [3],
        AuditQuery(decision="allowed", who="nobody"): [],
    }
    for query, ids in cases.items():
        assert [e.id for e in (await audit.page(query)).entries] == ids, query


async def test_the_audit_keeps_the_newest_rows_only(tmp_path: Path) -> None:
    audit = await AuditLog.open(tmp_path, max_rows=3)
    for n in range(10):
        await audit.record(entry(n))
    assert await audit.count() == 3
    assert [e.id for e in (await audit.page(AuditQuery())).entries] == [10, 9, 8]


async def test_concurrent_records_all_land(tmp_path: Path) -> None:
    audit = await AuditLog.open(tmp_path, max_rows=1000)
    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(audit.record, entry(n))
    assert await audit.count() == 20


async def test_reopening_keeps_what_was_recorded(tmp_path: Path) -> None:
    await (await AuditLog.open(tmp_path, max_rows=10)).record(entry(1))
    again = await AuditLog.open(tmp_path, max_rows=10)
    assert await again.count() == 1


def _future_schema(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")


async def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    await trio.to_thread.run_sync(_future_schema, tmp_path / DB_NAME)
    with pytest.raises(AuditError, match="schema version 99"):
        await AuditLog.open(tmp_path, max_rows=10)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database" * 100)


async def test_a_foreign_file_is_an_audit_error(tmp_path: Path) -> None:
    await trio.to_thread.run_sync(_garbage, tmp_path / DB_NAME)
    with pytest.raises(AuditError, match=DB_NAME):
        await AuditLog.open(tmp_path, max_rows=10)
